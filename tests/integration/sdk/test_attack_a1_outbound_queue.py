"""Attack on the outbound queue's full-queue rule (09f98f3): waits for room that end in the same turn as their frame
is let in, waits that can never end because reconnection gave up, and what such edges do to the connection."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator

import pytest
from websockets.asyncio.server import serve

from iii import ReconnectionConfig
from iii.connection import Connection, Write
from iii.errors import OutboundQueueFullError
from iii.iii_constants import IIIConnectionState
from tests.integration.sdk.test_connection import Recorder, recorder

__all__ = ["recorder"]  # the fixture, imported for pytest


async def _waiting(task: asyncio.Future[bool]) -> None:
    """Let ``task`` start its wait for room (one turn), and check that it does wait."""
    await asyncio.sleep(0)
    assert not task.done()


async def test_a_wait_cancelled_in_the_turn_its_frame_is_let_in_keeps_the_connection(recorder: Recorder) -> None:
    """A waiter cancelled (its caller's timeout, a cancel) in the turn the backlog lets it in: before, the
    admission set a result on the cancelled future (InvalidStateError), which ended the supervisor (no more
    reconnects, the rest of the backlog never sent) and sent the frame of a caller told it was cancelled."""
    stuck: list[asyncio.Future[bool]] = []
    ready = asyncio.Event()

    async def on_open(write: Write) -> None:
        stuck[0].cancel()  # the same turn as the flush that follows, with no await in between

    conn = Connection(recorder.url, on_frame=lambda raw: None, on_open=on_open, on_ready=ready.set, max_queue=1,
                      max_waiting=8)
    await conn.send("m0")
    stuck.append(asyncio.ensure_future(conn.send("cancelled")))
    await _waiting(stuck[0])
    later = asyncio.ensure_future(conn.send("m1"))
    await _waiting(later)
    try:
        await conn.start()
        await asyncio.wait_for(ready.wait(), 10)
        with pytest.raises(asyncio.CancelledError):
            await stuck[0]
        assert await asyncio.wait_for(later, 5) is False
        assert await conn.send("m2") is True
        await recorder.wait_for(lambda: len(recorder.frames) >= 3)
        assert recorder.frames == ["m0", "m1", "m2"]
    finally:
        await conn.close()


async def test_close_with_a_wait_cancelled_and_not_yet_ended() -> None:
    """close() in the turn a waiter was cancelled: before, it raised InvalidStateError (shutdown broken)."""
    conn = Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, max_queue=1, max_waiting=8)
    await conn.send("m0")
    stuck = asyncio.ensure_future(conn.send("cancelled"))
    other = asyncio.ensure_future(conn.send("other"))
    await _waiting(stuck)
    stuck.cancel()
    await conn.close()  # never started: no await before the queue is emptied
    with pytest.raises(asyncio.CancelledError):
        await stuck
    await asyncio.wait_for(asyncio.gather(other, return_exceptions=True), 5)


async def test_waits_for_room_end_at_once_when_reconnection_gives_up() -> None:
    """max_retries reached ("failed"): nothing will ever make room, so a wait for room ends then, and a send to
    the full queue after it fails at once (before: each waited out queue_wait, 30 s by default)."""
    async with serve(lambda ws: ws.close(), "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    failed = asyncio.Event()

    def on_state(state: IIIConnectionState) -> None:
        if state == "failed":
            failed.set()

    config = ReconnectionConfig(initial_delay_ms=200, max_delay_ms=200, jitter_factor=0.0, max_retries=1)
    conn = Connection(url, on_frame=lambda raw: None, on_state=on_state, reconnection=config, max_queue=1,
                      queue_wait=20.0)
    await conn.send("m0")
    stuck = asyncio.ensure_future(conn.send("m1"))
    await _waiting(stuck)
    try:
        await conn.start()
        await asyncio.wait_for(failed.wait(), 10)
        with pytest.raises(OutboundQueueFullError, match="reconnection gave up"):
            await asyncio.wait_for(stuck, 2)
        started = time.monotonic()
        with pytest.raises(OutboundQueueFullError, match="reconnection gave up"):
            await asyncio.wait_for(conn.send("m2"), 2)
        assert time.monotonic() - started < 1
    finally:
        await conn.close()


class _CountingDeque(deque[tuple[object, object]]):
    """A backlog that counts how often it is walked (a scan for a call to push out)."""

    walks = 0

    def __iter__(self) -> Iterator[tuple[object, object]]:
        type(self).walks += 1
        return super().__iter__()


async def _waiting_sends(max_queue: int, waiting: int) -> tuple[Connection, list[asyncio.Future[bool]]]:
    """Fill a never-started connection's queue with ``max_queue`` unkeyed frames, then make ``waiting`` more
    sends that must wait for room (each is a task, as each caller's would be)."""
    conn = Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, max_queue=max_queue, max_waiting=waiting)
    for n in range(max_queue):
        await conn.send(f"q{n}")
    tasks = [asyncio.ensure_future(conn.send(f"w{n}")) for n in range(waiting)]
    await asyncio.sleep(0)  # every send runs up to its wait
    return conn, tasks


async def _ended(conn: Connection, tasks: list[asyncio.Future[bool]]) -> None:
    await conn.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_burst_of_fire_and_forget_sends_does_not_walk_the_queue() -> None:
    """Each unkeyed send to a full queue of unkeyed frames looked at every queued frame for a call to push out
    (5,000 sends behind 5,000 frames: 25 million steps, before); with no call queued it looks at none."""
    dropped: list[str] = []
    conn = Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, max_queue=100, max_waiting=1000,
                      on_dropped=dropped.append)
    for n in range(100):
        await conn.send(f"q{n}")
    conn._backlog = _CountingDeque(conn._backlog)  # type: ignore[assignment]
    _CountingDeque.walks = 0
    tasks = [asyncio.ensure_future(conn.send(f"w{n}")) for n in range(1000)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in tasks) and _CountingDeque.walks == 0
    await conn.send("call", "k")  # no call queued to push out: this one is refused, and told, with no walk either
    assert dropped == ["k"] and _CountingDeque.walks == 0
    await _ended(conn, tasks)


async def test_callers_that_stop_waiting_leave_wherever_they_stand_and_the_rest_keep_their_order() -> None:
    """Cancelling the newest half of 10,000 waiters (newest first) left a deque scanned from its head each time
    (before); now each leaves in one step, and the others are let in, in order, as room comes."""
    conn, tasks = await _waiting_sends(5, 10_000)
    for task in reversed(tasks[5000:]):
        task.cancel()
    await asyncio.gather(*tasks[5000:], return_exceptions=True)
    for task in tasks[:2500]:
        task.cancel()
    await asyncio.gather(*tasks[:2500], return_exceptions=True)
    assert len(conn._waiting) == 2500
    assert [entry.frame for entry in conn._waiting][:3] == ["w2500", "w2501", "w2502"]
    await _ended(conn, tasks)
