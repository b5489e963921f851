"""``send_timeout`` bounds a write that makes no progress, not one that takes long: an engine that keeps taking bytes,
however slowly, is alive.

Before, the bound was on the whole wait for the socket to drain: a frame that needed longer than ``send_timeout``
to cross a slow link (50 MB at 100 KB/s: 500 s, against 30 s) had its connection dropped half way, and was
lost with it; on the next socket the same frame was cut again. Small frames queued behind a large one were cut too.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from polling import until
from stall_relay import SMALL_BUFFER, Relay

from iii.connection import Connection
from tests.integration.sdk.test_hbr_send_on_this_connection import FAST, Recorder, recorder

__all__ = ["recorder"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.timeout(30)

SEND_TIMEOUT_S = 0.4
RATE = 256 * 1024  # bytes a second the slow link carries


class SlowRelay(Relay):
    """A relay whose client-to-engine direction carries at most ``rate`` bytes a second (a slow but live link)."""

    def __init__(self, target_port: int, rate: int) -> None:
        super().__init__(target_port)
        self.rate = rate
        self.carried = 0

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool) -> None:
        if not gated:
            await super()._pump(reader, writer, gated=gated)
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            while True:
                await self.flowing.wait()
                data = await reader.read(SMALL_BUFFER)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                self.carried += len(data)
                # the pace of the link: this many bytes take this long (a pause between reads, not a wait for an event)
                ahead = began + self.carried / self.rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


@pytest.fixture
async def slow(recorder: Recorder) -> AsyncIterator[SlowRelay]:
    assert recorder.server is not None
    relay = SlowRelay(recorder.server.sockets[0].getsockname()[1], RATE)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


async def slow_connection(relay: SlowRelay) -> Connection:
    ready = asyncio.Event()
    conn = Connection(relay.url, on_frame=lambda raw: None, on_ready=ready.set, reconnection=FAST,
                      send_timeout=SEND_TIMEOUT_S, max_size=None)
    await conn.start()
    await asyncio.wait_for(ready.wait(), 10)
    ws = conn._ws
    assert ws is not None
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    return conn


async def test_a_frame_that_takes_longer_than_send_timeout_on_a_slow_live_link_is_not_cut(
        recorder: Recorder, slow: SlowRelay) -> None:
    conn = await slow_connection(slow)
    try:
        first = conn._ws
        big = "b" * (RATE * 2)  # ~2 s on the link: five times send_timeout, bytes moving all the time
        assert await conn.send(big) is True  # into the socket's buffer at once (nothing was waiting)
        began = time.monotonic()
        assert await conn.send("next") is True  # waits for the socket to drain: for the big frame to cross
        took = time.monotonic() - began
        await recorder.wait_for(lambda: "next" in recorder.frames)
        assert took > SEND_TIMEOUT_S * 2  # it really waited on the slow link (the test measures what it claims)
        assert recorder.frames == [big, "next"]
        assert conn._ws is first and len(recorder.connections) == 1  # never dropped
    finally:
        await conn.close()


async def test_small_frames_queued_behind_a_large_one_on_a_slow_live_link_are_not_cut(
        recorder: Recorder, slow: SlowRelay) -> None:
    conn = await slow_connection(slow)
    try:
        big = "b" * (RATE * 2)
        sends = [asyncio.ensure_future(conn.send(big))]
        await asyncio.sleep(0)
        sends += [asyncio.ensure_future(conn.send(f"small-{i}")) for i in range(20)]
        assert await asyncio.wait_for(asyncio.gather(*sends), 20) == [True] * 21
        await recorder.wait_for(lambda: "small-19" in recorder.frames)
        assert recorder.frames == [big] + [f"small-{i}" for i in range(20)]
        assert len(recorder.connections) == 1
    finally:
        await conn.close()


async def test_a_slow_link_that_then_stops_is_dropped_after_send_timeout_without_progress(
        recorder: Recorder, slow: SlowRelay) -> None:
    conn = await slow_connection(slow)
    try:
        first = conn._ws
        assert await conn.send("b" * (RATE * 4)) is True  # ~4 s on the link
        waiting = asyncio.ensure_future(conn.send("next"))
        await until(lambda: slow.carried > RATE // 2)  # bytes are moving
        slow.flowing.clear()  # the link stops: nothing taken from now on
        stopped = time.monotonic()
        await until(lambda: conn._ws is not first)
        idle = time.monotonic() - stopped
        # (the relay's and the kernel's buffers take a little more first, so up to ~0.3 s of slack)
        assert SEND_TIMEOUT_S <= idle < SEND_TIMEOUT_S * 1.25 + 0.5
        assert await asyncio.wait_for(waiting, 5) is True  # written before the drop: lost with the socket
    finally:
        slow.flowing.set()
        await conn.close()
