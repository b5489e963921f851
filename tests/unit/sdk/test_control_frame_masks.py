"""The SDK control socket's queued frames (iii.ws_fastpath.queue_frame): masked with keys from a pooled read of the
OS's random source, byte-for-byte what websockets would send, on a real connection."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None}


async def _round(frames: list[str | bytes]) -> list[str | bytes]:
    """Queue ``frames`` on a real client socket, write them in one go, and return what the server received."""
    got: list[str | bytes] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            got.append(message)
            if len(got) == len(frames):
                done.set()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", **OPTS) as ws:
            for frame in frames:
                assert ws_fastpath.queue_frame(ws, frame)
            ws_fastpath.flush(ws)
            await asyncio.wait_for(done.wait(), 10)
    return got


async def test_queued_frames_arrive_intact_and_share_one_random_read(urandom_reads: list[int]) -> None:
    frames: list[str | bytes] = [f'{{"n": {n}, "text": "é"}}' if n % 2 else os.urandom(n % 300) for n in range(2000)]
    ws_fastpath._mask_keys.clear()
    reads = urandom_reads
    del reads[:]  # only the round's own reads
    assert await _round(frames) == frames
    # websockets draws one key per frame (2,000 reads); the pool reads 4 KiB per 1,024 keys
    assert sum(1 for n in reads if n == 4 * ws_fastpath._KEYS_PER_READ) == 2
    assert len(reads) < 10


async def test_debug_logging_leaves_the_frame_to_websockets(caplog: pytest.LogCaptureFixture) -> None:
    ws_fastpath._mask_keys.clear()
    with caplog.at_level(logging.DEBUG, logger="test.control.masks"):
        got: list[str | bytes] = []
        done = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            got.append(await ws.recv())
            done.set()

        async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
            port = server.sockets[0].getsockname()[1]
            logger = logging.getLogger("test.control.masks")
            async with websockets.connect(f"ws://127.0.0.1:{port}", logger=logger, **OPTS) as ws:
                assert ws.protocol.debug
                assert ws_fastpath.queue_frame(ws, "hello")
                ws_fastpath.flush(ws)
                await asyncio.wait_for(done.wait(), 10)
    assert got == ["hello"]
    assert ws_fastpath._mask_keys == []  # websockets drew the key, so its debug log shows the frame
    assert any("> TEXT 'hello'" in r.getMessage() for r in caplog.records)


def test_a_forked_child_never_reuses_the_parents_pooled_keys() -> None:
    ws_fastpath._mask_keys.clear()
    ws_fastpath._mask_key()  # the parent's pool is full now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, ws_fastpath._mask_key())
        finally:
            os._exit(0)
    os.close(write)
    child_key = os.read(read, 4)
    os.close(read)
    os.waitpid(pid, 0)
    # the child's first key is the one the parent draws next unless the fork hook emptied the child's pool
    assert len(child_key) == 4 and child_key != ws_fastpath._mask_key()
