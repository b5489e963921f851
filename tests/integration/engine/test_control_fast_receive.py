"""The control socket reads whole frames through ``iii.ws_fastpath``: what websockets did for it still holds
(1007 for a text frame that is not UTF-8, fragmented messages reassembled, pings answered; 1009 over the
size limit is in test_control_socket.py), and every frame is handled in order."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

from iii import ws_fastpath
from iii_engine import Engine, EngineConfig

from .raw import TIMEOUT, RawWorker


@pytest.fixture
async def engine() -> Engine:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as running:
        yield running  # type: ignore[misc]


async def test_text_frame_not_utf8_closes_that_connection_with_1007(engine: Engine) -> None:
    bad, good = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    try:
        await bad.ws.send(b'{"type":"ping","x":"\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(bad.ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        await good.send({"type": "ping"})
        await good.expect("pong")  # the engine keeps serving the others
    finally:
        await bad.close()
        await good.close()


async def test_fragmented_message_pings_and_order(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    try:
        await worker.register("fast::f")
        pong = await worker.ws.ping()
        await asyncio.wait_for(pong, TIMEOUT)
        await worker.ws.send(['{"type":"invokefunction","function_id":"fast::missing",', '"data":1,',
                              '"invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"}'])
        reply = await worker.expect("invocationresult")
        assert reply["error"]["code"] == "function_not_found"
        # after a fragmented message websockets reads the rest of the stream: frames still arrive, in order
        for n in range(20):
            await worker.ws.send(json.dumps({"type": "invokefunction", "function_id": "fast::missing", "data": n,
                                             "invocation_id": f"00000000-0000-4000-8000-{n:012d}"}))
        ids = [(await worker.expect("invocationresult"))["invocation_id"] for _ in range(20)]
        assert ids == [f"00000000-0000-4000-8000-{n:012d}" for n in range(20)]
    finally:
        await worker.close()


async def test_control_socket_uses_the_fast_receive_path(engine: Engine) -> None:
    if not ws_fastpath.AVAILABLE:
        pytest.skip(f"websockets lacks {ws_fastpath.MISSING}")
    before = sum(ws_fastpath.FALLBACKS.values())
    worker = await RawWorker.connect(engine.url)
    try:
        for n in range(5):
            await worker.send({"type": "invokefunction", "function_id": "fast::missing", "data": n,
                               "invocation_id": f"00000000-0000-4000-8000-{n:012d}"})
        for _ in range(5):
            await worker.expect("invocationresult")
        (server,) = engine._listener._server.connections if engine._listener._server else ()  # type: ignore[misc]
        assert isinstance(server, ws_fastpath.FastServerConnection) and server._phase == 3  # _FAST
        assert sum(ws_fastpath.FALLBACKS.values()) == before
    finally:
        await worker.close()
