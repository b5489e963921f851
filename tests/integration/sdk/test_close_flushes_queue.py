"""``Connection.close`` writes what is still queued for a socket that is up before it closes it, within its
``close_timeout``. Before, the queue was discarded at once: a handler's answer, a fire-and-forget call or a log record
waiting for a slow engine to read was lost at every shutdown (logged as discarded)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from iii.connection import Connection

pytestmark = pytest.mark.timeout(30)

FRAME = "x" * (256 * 1024)


@dataclass
class SlowEngine:
    """A server that reads nothing until ``release`` is set, then counts every message until the close."""

    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[int] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        await self.release.wait()
        try:
            async for message in ws:
                self.received.append(len(message))
        finally:
            self.ended.set()


@pytest.fixture
async def slow() -> AsyncIterator[SlowEngine]:
    engine = SlowEngine()
    async with websockets.serve(engine.handler, "127.0.0.1", 0, max_queue=1, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        engine.url = f"ws://127.0.0.1:{port}"
        yield engine


async def _backed_up(slow: SlowEngine) -> tuple[Connection, int]:
    """A connection to ``slow`` whose socket is full and whose queue holds frames: how many frames were sent."""
    ready = asyncio.Event()
    conn = Connection(slow.url, on_frame=lambda raw: None, on_ready=ready.set, send_timeout=20)
    await conn.start()
    await asyncio.wait_for(ready.wait(), 10)
    sent = 0
    while len(conn._backlog) < 8:  # (the kernel's buffers fill first: a few MiB)
        conn.send_soon(FRAME)
        sent += 1
        await asyncio.sleep(0)
        assert sent < 2000, "the socket never filled"
    conn.send_soon('{"type":"log","last":true}', key=None)
    conn.send_soon("a call nobody will hear the answer to", key="call-1")
    return conn, sent + 1


async def test_close_writes_the_queue_to_an_engine_that_reads_it(slow: SlowEngine) -> None:
    conn, sent = await _backed_up(slow)
    closing = asyncio.create_task(conn.close(10))
    await asyncio.sleep(0)  # the close has begun: its flush waits for the engine to read
    slow.release.set()
    await closing
    await asyncio.wait_for(slow.ended.wait(), 10)
    assert len(slow.received) == sent  # every queued frame, the queued call excepted (its caller hears the shutdown)
    assert slow.received[-1] == len('{"type":"log","last":true}')
    assert not conn._backlog and conn.state == "disconnected"


async def test_close_gives_up_at_its_bound_when_the_engine_reads_nothing(slow: SlowEngine,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    conn, _ = await _backed_up(slow)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await conn.close(0.3)
    assert 0.25 <= loop.time() - started < 3  # one bound for the flush and the close together
    assert not conn._backlog and conn.state == "disconnected"
    assert "never sent to" in caplog.text  # what was left is discarded, and said
    slow.release.set()
