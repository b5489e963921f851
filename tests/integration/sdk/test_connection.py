"""The client transport on real sockets: the bounded offline queue and the retry counter
(docs/protocol.md#reference-sdk-differences)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from iii import ReconnectionConfig
from iii.connection import Connection
from iii.errors import OutboundQueueFullError
from iii.iii_constants import IIIConnectionState


class Recorder:
    """A WebSocket server keeping every text frame; optionally closes each connection right after opening."""

    def __init__(self, close_at_once: bool = False) -> None:
        self.close_at_once = close_at_once
        self.frames: list[str | bytes] = []
        self.connections = 0
        self.changed = asyncio.Condition()
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, ws: ServerConnection) -> None:
        async with self.changed:
            self.connections += 1
            self.changed.notify_all()
        if self.close_at_once:
            await ws.close()
            return
        async for raw in ws:
            async with self.changed:
                self.frames.append(raw)
                self.changed.notify_all()

    async def wait_for(self, predicate: object) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(predicate)  # type: ignore[arg-type]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with serve(rec.handle, "127.0.0.1", 0) as server:
        rec.server = server
        yield rec


async def test_a_full_queue_makes_an_unkeyed_send_wait_and_loses_nothing(recorder: Recorder) -> None:
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=3)
    for i in range(3):
        assert await conn.send(f"m{i}") is False  # not connected yet: queued
    late = [asyncio.ensure_future(conn.send(f"m{i}")) for i in (3, 4)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in late)  # full: they wait for room instead of pushing anything out
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 5)
        assert recorder.frames == ["m0", "m1", "m2", "m3", "m4"]  # all of them, in order
        assert [await t for t in late] == [False, False]
    finally:
        await conn.close()


async def test_an_unkeyed_send_waits_for_room_at_most_queue_wait_then_fails_clearly(recorder: Recorder) -> None:
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=2, queue_wait=0.05)
    await conn.send("m0")
    await conn.send("m1")
    with pytest.raises(OutboundQueueFullError, match=r"never sent: the outbound queue stayed full \(2 frames"):
        await conn.send("m2")
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 2)
        await conn.send("after")  # sent straight: the refused frame left no trace in the queue
        await recorder.wait_for(lambda: len(recorder.frames) >= 3)
        assert recorder.frames == ["m0", "m1", "after"]
    finally:
        await conn.close()


async def test_a_full_queue_pushes_out_calls_only_and_tells_each(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    dropped: list[str] = []
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=3, on_dropped=dropped.append)
    await conn.send("void-a")
    await conn.send("call-1", "k1")
    await conn.send("void-b")
    with caplog.at_level(logging.WARNING, logger="iii.connection"):
        await conn.send("call-2", "k2")  # the oldest call makes way, not the older fire-and-forget frame
        assert dropped == ["k1"]
        await conn.send("void-c")  # an unkeyed frame too takes the place of a call rather than wait
        assert dropped == ["k1", "k2"]
        await conn.send("call-3", "k3")  # no call left to push out: this one is refused, and told
        assert dropped == ["k1", "k2", "k3"]
        conn.send_soon("telemetry", droppable=True)  # best effort: dropped with a warning, nothing else lost
        conn.send_soon("registration")  # the loop's own frame, which must not be lost: kept past the bound
    # the first call lost is logged at once, the next two only counted: their warning comes once per interval
    assert sum("1 queued call(s) made way" in r.getMessage() for r in caplog.records) == 1
    assert not any("refused" in r.getMessage() for r in caplog.records)
    assert sum("best-effort frame(s)" in r.getMessage() for r in caplog.records) == 1 and conn.dropped == 1
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 4)
        assert recorder.frames == ["void-a", "void-b", "void-c", "registration"]
    finally:
        await conn.close()


async def test_the_loops_own_frames_keep_their_place_behind_sends_waiting_for_room(recorder: Recorder) -> None:
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=1, max_waiting=8)
    await conn.send("m0")
    waiting = asyncio.ensure_future(conn.send("m1"))
    await asyncio.sleep(0)
    conn.send_soon("result")  # after m1 was handed over: it goes after m1, and is not dropped
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 3)
        assert recorder.frames == ["m0", "m1", "result"]
        assert await waiting is False
    finally:
        await conn.close()


async def test_sends_past_max_queue_waiting_for_room_fail_at_once(recorder: Recorder) -> None:
    """The waits are bounded in count too: one more than ``max_queue`` fails at once instead of holding its caller."""
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=2)
    await conn.send("m0")
    await conn.send("m1")
    waiting = [asyncio.ensure_future(conn.send(f"w{i}")) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(OutboundQueueFullError, match="and 2 more sends already wait for room"):
        await conn.send("crowded")
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 4)
        assert recorder.frames == ["m0", "m1", "w0", "w1"]
        assert await asyncio.gather(*waiting) == [False, False]
    finally:
        await conn.close()


async def test_a_cancelled_or_closed_wait_for_room_leaves_no_frame_behind(recorder: Recorder) -> None:
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=1, max_waiting=8)
    await conn.send("m0")
    cancelled = asyncio.ensure_future(conn.send("cancelled"))
    waiting = asyncio.ensure_future(conn.send("m1"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 2)
        await waiting
        await conn.send("m2")
        await recorder.wait_for(lambda: len(recorder.frames) >= 3)
        assert recorder.frames == ["m0", "m1", "m2"]
    finally:
        await conn.close()
    # Closing discards what still waits for room, like the rest of the queue, and ends those waits.
    closed = Connection(recorder.url, on_frame=lambda raw: None, max_queue=1, max_waiting=8)
    await closed.send("x")
    stuck = asyncio.ensure_future(closed.send("y"))
    await asyncio.sleep(0)
    await closed.close()
    assert await asyncio.wait_for(stuck, 5) is False
    assert closed.queued_keys() == set()


async def test_queued_frames_whose_key_is_no_longer_wanted_are_skipped(recorder: Recorder) -> None:
    wanted = {"keep"}
    conn = Connection(recorder.url, on_frame=lambda raw: None, keep=wanted.__contains__)
    await conn.send("stale", "gone")
    await conn.send("fresh", "keep")
    await conn.send("plain")
    try:
        await conn.start()
        await recorder.wait_for(lambda: len(recorder.frames) >= 2)
        assert recorder.frames == ["fresh", "plain"]
    finally:
        await conn.close()


async def test_retry_counter_resets_after_each_successful_connect() -> None:
    rec = Recorder(close_at_once=True)
    states: list[IIIConnectionState] = []
    fourth = asyncio.Event()

    def on_state(state: IIIConnectionState) -> None:
        states.append(state)
        if states.count("connected") >= 4:
            fourth.set()

    # One retry allowed: without the reset, the second drop would end in "failed".
    config = ReconnectionConfig(initial_delay_ms=1, max_delay_ms=5, jitter_factor=0.0, max_retries=1)
    async with serve(rec.handle, "127.0.0.1", 0) as server:
        rec.server = server
        conn = Connection(rec.url, on_frame=lambda raw: None, on_state=on_state, reconnection=config)
        try:
            await conn.start()
            await asyncio.wait_for(fourth.wait(), 10)
        finally:
            await conn.close()
    assert "failed" not in states


async def test_failed_after_max_retries_without_any_server() -> None:
    async with serve(lambda ws: ws.close(), "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    failed = asyncio.Event()
    states: list[IIIConnectionState] = []

    def on_state(state: IIIConnectionState) -> None:
        states.append(state)
        if state == "failed":
            failed.set()

    config = ReconnectionConfig(initial_delay_ms=1, max_delay_ms=2, jitter_factor=0.0, max_retries=2)
    conn = Connection(url, on_frame=lambda raw: None, on_state=on_state, reconnection=config)
    await conn.start()
    await asyncio.wait_for(failed.wait(), 10)
    # connect, 2 retries, then give up: the reference's state sequence
    assert states == ["connecting", "reconnecting", "failed"]
    await conn.close()


async def test_send_now_writes_at_once_and_queues_only_when_it_must(recorder: Recorder) -> None:
    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set)
    conn.send_now("early", "k0")  # not connected: queued, flushed on connect
    try:
        await conn.start()
        await asyncio.wait_for(ready.wait(), 10)
        await recorder.wait_for(lambda: recorder.frames == ["early"])
        conn.send_now("text")  # open socket, nothing queued: written before send_now returns, no task
        conn.send_now(b"\x00bin")
        assert not conn._backlog and conn._flusher is None
        ws = conn._ws
        assert ws is not None
        ws.pause_writing()  # flow control says wait: the frame goes through the queue and websockets' send
        conn.send_now("paused", "k1")
        assert conn.queued_keys() == {"k1"}
        ws.resume_writing()
        await recorder.wait_for(lambda: len(recorder.frames) == 4)
        assert recorder.frames == ["early", "text", b"\x00bin", "paused"]
    finally:
        await conn.close()


async def test_frames_batched_in_one_turn_leave_in_one_write_in_order(recorder: Recorder) -> None:
    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set)
    try:
        await conn.start()
        await asyncio.wait_for(ready.wait(), 10)
        ws = conn._ws
        assert ws is not None
        writes: list[bytes] = []
        write = ws.transport.write

        def counted(data: Any) -> None:
            writes.append(bytes(data))
            write(data)

        ws.transport.write = counted  # type: ignore[method-assign]
        # Five batched frames in one turn of the loop (send does not suspend on an open socket), then an
        # unbatched one in that turn: it goes after them, in the same write.
        for i in range(5):
            assert await conn.send(f"m{i}", batch=True)
        conn.send_now("last")
        assert writes == []
        await recorder.wait_for(lambda: len(recorder.frames) == 6)
        assert recorder.frames == ["m0", "m1", "m2", "m3", "m4", "last"]
        assert len(writes) == 1
        conn.send_now("alone")  # no batch pending: written at once
        assert len(writes) == 2
    finally:
        await conn.close()


async def test_messages_are_delivered_from_the_socket_callback_in_order() -> None:
    """Complete messages reach ``on_frame`` straight from the socket callback (no reader task in between); a
    fragmented message, and whatever arrives while it still waits in websockets' queue, keep their order."""

    async def script(ws: ServerConnection) -> None:
        assert await ws.recv() == "go"
        await ws.send("a")
        await ws.send(["b1", "b2"])  # fragmented: websockets' own path
        await ws.send("c")
        await ws.send(b"d")
        assert await ws.recv() == "next"
        await ws.send("e")
        await ws.wait_closed()

    got: list[tuple[str | bytes, bool]] = []
    changed = asyncio.Event()

    def on_frame(raw: str | bytes) -> None:
        got.append((raw, asyncio.current_task() is None))
        changed.set()

    async def wait_for(count: int) -> None:
        while len(got) < count:
            changed.clear()
            await asyncio.wait_for(changed.wait(), 10)

    ready = asyncio.Event()
    async with serve(script, "127.0.0.1", 0) as server:
        conn = Connection(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", on_frame=on_frame,
                          on_ready=ready.set)
        try:
            await conn.start()
            await asyncio.wait_for(ready.wait(), 10)
            conn.send_now("go")
            await wait_for(4)
            conn.send_now("next")
            await wait_for(5)
        finally:
            await conn.close()
    assert [raw for raw, _ in got] == ["a", "b1b2", "c", b"d", "e"]
    direct = dict(got)
    assert direct["a"] and direct["e"]  # nothing queued ahead of them: no task involved
    assert not direct["b1b2"]


async def test_a_burst_of_dropped_best_effort_frames_is_logged_once_then_counted(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: one warning per dropped frame, so a peer flooding pings (one pong each) flooded the log.
    conn = Connection(recorder.url, on_frame=lambda raw: None, max_queue=1)
    conn.send_soon("registration")
    with caplog.at_level(logging.WARNING, logger="iii.connection"):
        for _ in range(500):
            conn.send_soon('{"type":"pong"}', droppable=True)
        assert conn.dropped == 500
        warnings = [r.getMessage() for r in caplog.records if "best-effort" in r.getMessage()]
        assert len(warnings) == 1 and "1 best-effort frame(s)" in warnings[0]
        await conn.close()  # the rest of the burst is logged with its count, not lost from the log
    warnings = [r.getMessage() for r in caplog.records if "best-effort" in r.getMessage()]
    assert len(warnings) == 2 and "499 best-effort frame(s)" in warnings[1] and "500 in all" in warnings[1]
