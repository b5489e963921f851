"""A real engine reached at a wrong path answers the upgrade 404, which alone read as "not an iii engine": the error
now says that a worker port answers at ``/`` and which path the URL asked for."""

from __future__ import annotations

import asyncio

import pytest

from iii import InitOptions, ReconnectionConfig, register_worker
from iii_engine import Engine

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our engine answers 404 at an unknown path")]

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0)


async def test_a_wrong_path_is_named() -> None:
    async with Engine(port=0) as engine:
        with pytest.raises(ConnectionError) as failure:
            # (from a thread: the engine runs on this loop)
            await asyncio.to_thread(register_worker, f"{engine.url}/ws", InitOptions(reconnection_config=FAST))
    assert str(failure.value).endswith("; an engine's worker port answers at the path /, this URL asks for '/ws'")
    assert "HTTP 404" in str(failure.value)
