"""A ``wss://`` URL to an engine that serves plain ``ws://``: the server resets the TLS hello, and the error said
only "ConnectionResetError" (its warnings an empty "failed: "), for the whole 30 s wait. It now says the server may
not speak TLS."""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii import InitOptions, ReconnectionConfig, register_worker
from iii_engine import Engine

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our engine serves plain ws://")]

HINT = "a wss:// URL: does the server speak TLS? The engine serves ws:// unless a TLS proxy fronts it"


async def test_a_tls_hello_to_a_plain_engine_is_named(caplog: pytest.LogCaptureFixture) -> None:
    options = InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20,
                                                                 jitter_factor=0.0, max_retries=1))
    async with Engine(port=0) as engine:
        url = engine.url.replace("ws://", "wss://", 1)
        with caplog.at_level(logging.WARNING, logger="iii"), pytest.raises(ConnectionError) as failure:
            await asyncio.to_thread(register_worker, url, options)  # (from a thread: the engine runs on this loop)
    assert HINT in str(failure.value), str(failure.value)
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"Connection to {url} failed")]
    assert warned and all(m.endswith(f"ConnectionResetError ({HINT})") for m in warned), warned
