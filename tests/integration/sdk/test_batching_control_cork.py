"""The SDK control socket batches with the channel sockets' corking (iii.ws_fastpath._Corked): a turn's joined
write stays bounded by FLUSH_BYTES, and websockets' own frames (Close) come after the frames corked before them.
Real client Connection, real websockets server. (One write per turn: test_connection.py.)"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from iii.connection import Connection

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


async def _run(frames: list[str], *, close_after: bool = False) -> tuple[list[str], list[int]]:
    """Send ``frames`` as batch sends started in one loop turn (then close the socket in that turn if
    ``close_after``); the messages the server got and the sizes of the client's transport writes before it."""
    got: list[str] = []
    done = asyncio.Event()
    ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            got.append(str(message))
        done.set()  # the client's Close ended the loop: every frame before it was read

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        conn = Connection(f"ws://127.0.0.1:{port}", on_frame=lambda _raw: None, on_ready=ready.set, max_size=None)
        await conn.start()
        try:
            await asyncio.wait_for(ready.wait(), 10)
            ws = conn._ws
            assert isinstance(ws, ws_fastpath.DirectClientConnection)
            with mock.patch.object(ws.transport, "write", wraps=ws.transport.write) as write:
                sends = [asyncio.ensure_future(conn.send(frame, batch=True)) for frame in frames]
                closing = asyncio.ensure_future(ws.close()) if close_after else None
                assert all(await asyncio.gather(*sends))
                if closing is None:
                    await ws.close()
                else:
                    await asyncio.wait_for(closing, 10)
                await asyncio.wait_for(done.wait(), 10)
        finally:
            await conn.close()
    return got, [len(call.args[0]) for call in write.call_args_list][:-1]  # the last one: the Close frame


async def test_a_joined_control_write_is_bounded_by_flush_bytes() -> None:
    # 40 frames of 100 KiB in one turn: before, all 4 MB were joined into one write (one more 4 MB copy).
    frames = [f"{n:08d}" + "x" * (100 * 1024) for n in range(40)]
    got, writes = await _run(frames)
    assert got == frames
    assert sum(writes) > 40 * 100 * 1024
    assert max(writes) < 2 * ws_fastpath.FLUSH_BYTES


async def test_a_close_in_the_turn_of_batched_frames_goes_after_them() -> None:
    frames = [f'{{"n": {n}}}' for n in range(16)]
    got, writes = await _run(frames, close_after=True)
    assert got == frames
    assert len(writes) == 1  # the 16 frames, in one write before the Close
