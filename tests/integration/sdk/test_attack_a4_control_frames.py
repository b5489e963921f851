"""Attack A4 on 8d546fe: the SDK control socket's FrameReader against a raw server. A fragmented message (with a
ping between its fragments) hands the stream to websockets for good; every message still reaches the client once and
in order, split between deliver and recv exactly where the class docstring says (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from tests.integration.sdk.test_control_fast_receive import OPTS, _connect


async def test_fragments_and_pings_between_direct_messages_keep_order() -> None:
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        parts = [ws_fastpath.server_frame(True, b"one"), ws_fastpath.server_frame(False, b"\x00" * 70000)]
        # A text message in three fragments, a ping between the first two, all in one write with direct frames.
        parts.append(b"\x01\x04frag")  # text, not final
        parts.append(b"\x89\x01p")  # ping
        parts.append(b"\x00\x04ment")  # continuation, not final
        tail = "ed é".encode()
        parts.append(bytes([0x80, len(tail)]) + tail)  # continuation, final
        parts.extend(ws_fastpath.server_frame(True, f"after {n}".encode()) for n in range(20))
        data = b"".join(parts)
        for at in range(0, len(data), 7):  # many small writes: frames split across reads anywhere
            ws.transport.write(data[at : at + 7])
            await asyncio.sleep(0)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        ws = await _connect(server.sockets[0].getsockname()[1])
        got: list[Any] = []
        done = asyncio.Event()

        def deliver(message: str | bytes) -> None:
            got.append(message)
            if len(got) >= 23:
                done.set()

        async def read() -> None:  # what the SDK's reader does with what deliver does not take
            async for message in ws:
                deliver(message)

        ws.deliver = deliver
        reader = asyncio.create_task(read())
        go.set()
        try:
            await asyncio.wait_for(done.wait(), 10)
            assert got == ["one", b"\x00" * 70000, "fragmented é", *(f"after {n}" for n in range(20))]
            assert ws._phase == ws_fastpath._OFF  # the first fragment handed the stream to websockets
        finally:
            await ws.close()
            await reader
