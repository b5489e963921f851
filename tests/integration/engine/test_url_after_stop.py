"""``Engine.url`` and ``Engine.port`` keep naming where the engine listened during and after its stop (the socket
list empties as the port closes, the stop's first step: they raised ``IndexError``); before a start, ``RuntimeError``
says it is not started."""

from __future__ import annotations

import asyncio

import pytest

from iii_engine import Engine
from iii_engine.modules.stream.module import StreamModule

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our engine's own properties")]


async def test_the_url_is_kept_through_the_stop() -> None:
    engine = Engine(port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = engine.port
    await engine.start()
    url, port = engine.url, engine.port
    stopping = asyncio.ensure_future(engine.stop())
    await asyncio.sleep(0)  # the stop under way: its first step closed the port
    assert (engine.url, engine.port) == (url, port)
    await stopping
    assert (engine.url, engine.port) == (url, port)


async def test_the_stream_sockets_url_is_kept_through_the_stop() -> None:
    async with Engine(port=0) as engine:
        stream = engine.module("stream")
        assert isinstance(stream, StreamModule)
        url = stream.url
    assert stream.url == url  # it raised IndexError once its server had closed
