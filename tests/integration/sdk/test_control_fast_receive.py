"""The SDK control socket reads data frames with iii.ws_fastpath.FrameReader (not websockets' parser) and hands them
to ``deliver``; what ``deliver`` does not take (before it is set, behind messages websockets still queues, invalid
UTF-8) goes to websockets as the same frames, so ``recv``, ordering, pings and the 1007 close behave as always.
Real websockets server, real client connection (issue 10: the parser cost more CPU per small frame than the rest)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError

from iii import ws_fastpath

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None}


async def _connect(port: int) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}", compression=None, ping_interval=None,
                                  create_connection=ws_fastpath.direct_client_factory())
    assert isinstance(ws, ws_fastpath.DirectClientConnection)
    return ws


async def test_data_frames_skip_websockets_parser_and_keep_order_around_deliver() -> None:
    go = asyncio.Event()
    pinged = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        for n in range(3):  # before the client sets deliver: read with recv
            await ws.send(f"early {n}")
        await go.wait()
        await ws.send("after 0")
        await ws.send(b"binary 1")
        await (await ws.ping())  # websockets still answers pings in the middle of the fast stream
        pinged.set()
        for n in range(2, 50):
            await ws.send(f"after {n}")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        ws = await _connect(server.sockets[0].getsockname()[1])
        try:
            early = [await asyncio.wait_for(ws.recv(), 10) for _ in range(3)]
            assert early == ["early 0", "early 1", "early 2"]
            got: list[str | bytes] = []
            done = asyncio.Event()

            def deliver(message: str | bytes) -> None:
                got.append(message)
                if len(got) == 50:
                    done.set()

            ws.deliver = deliver
            with mock.patch.object(ws.protocol, "receive_data", wraps=ws.protocol.receive_data) as parsed:
                go.set()
                await asyncio.wait_for(done.wait(), 10)
                await asyncio.wait_for(pinged.wait(), 10)
            assert got == ["after 0", b"binary 1", *(f"after {n}" for n in range(2, 50))]
            assert ws._phase == ws_fastpath._FAST
            # websockets parsed the ping only (the 50 data frames never went through it).
            assert 1 <= parsed.call_count <= 2
        finally:
            await ws.close()


async def test_messages_behind_ones_websockets_still_queues_wait_their_turn() -> None:
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        # Four frames in one write: they arrive in one read, all while deliver is unset, so websockets queues them.
        ws.transport.write(b"".join(ws_fastpath.server_frame(True, f"m{n}".encode()) for n in range(4)))
        await go.wait()
        await ws.send("m4")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        ws = await _connect(server.sockets[0].getsockname()[1])
        try:
            assert await asyncio.wait_for(ws.recv(), 10) == "m0"
            got: list[str | bytes] = []
            ws.deliver = got.append  # m1-m3 still wait in websockets' queue: m4 goes behind them
            go.set()
            assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(4)] == ["m1", "m2", "m3", "m4"]
            assert got == []
        finally:
            await ws.close()


async def test_invalid_utf8_text_still_closes_with_1007() -> None:
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        await ws.send("fine")
        # A text frame whose payload is not UTF-8, written raw (websockets would refuse to send it).
        ws.transport.write(ws_fastpath.server_frame(True, b"\xff\xfebad"))
        await ws.send("never delivered")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        ws = await _connect(server.sockets[0].getsockname()[1])
        got: list[str | bytes] = []
        ws.deliver = got.append
        go.set()
        try:
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosedError as exc:
                assert exc.rcvd is None and exc.sent is not None and exc.sent.code == 1007
            else:
                raise AssertionError("the connection stayed open")
            assert got == ["fine"]
        finally:
            await ws.close()
