"""A worker pointed at the engine's stream socket (3112 by default), which accepts the WebSocket upgrade but never
names the connection or answers a call: the SDK says so in one warning a few seconds after connecting, instead of
every call waiting its whole timeout with no word of why. A real worker port names the connection at once: no
warning."""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii import iii as iii_module
from iii.iii import III
from iii_engine import Engine
from iii_engine.modules.stream.module import StreamModule

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our engine's stream socket")]

WARN_S = 0.5


async def _warnings_after_connecting(url: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    client = III(url)
    try:
        with caplog.at_level(logging.WARNING, logger="iii"):
            await client.connect_async()
            await asyncio.sleep(WARN_S * 3)  # past the check: nothing to await for a warning that must not come
        return [r.getMessage() for r in caplog.records if "has not named this connection" in r.getMessage()]
    finally:
        await client.shutdown_async()


async def test_the_stream_socket_is_named_as_the_likely_mistake(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iii_module, "UNNAMED_WARN_S", WARN_S)
    async with Engine(port=0) as engine:
        stream = engine.module("stream")
        assert isinstance(stream, StreamModule)
        stream_url = stream.url
        at_stream = await _warnings_after_connecting(stream_url, caplog)
        at_worker_port = await _warnings_after_connecting(engine.url, caplog)
    assert len(at_stream) == 1 and "stream socket (3112 by default)" in at_stream[0], at_stream
    assert at_stream[0].startswith(stream_url)
    assert at_worker_port == []
