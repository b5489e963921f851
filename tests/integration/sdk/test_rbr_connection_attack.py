"""Second-round attack on the SDK connection's outbound path: frames handed over while the socket drops, a socket
already closed whose loss is not handled yet, shutdown and cancellation around pinned frames and bounded sends.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from polling import until

from iii.connection import Connection
from iii.errors import ConnectionLostError, OutboundQueueFullError
from tests.integration.sdk.test_hbr_send_on_this_connection import (
    FAST,
    FILLER,
    SMALL_BUFFER,
    Recorder,
    connected,
    recorder,
    stall,
)

__all__ = ["recorder"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.timeout(30)


def drop_server_side(recorder: Recorder) -> None:
    """Reset the server's sockets (one that stopped reading would hold the server's close for 10 s)."""
    for ws in recorder.connections:
        ws.transport.abort()


async def ready_again(conn: Connection, old: object) -> None:
    """Wait until a socket other than ``old`` is up and its backlog flushed."""
    await until(lambda: conn._ws is not old and conn._ws is not None and conn.is_ready)


@pytest.mark.parametrize("path", ["send_now", "write_now"])
async def test_a_call_frame_written_at_once_on_a_socket_already_closed_waits_for_the_next(
        recorder: Recorder, path: str) -> None:
    # send_now / write_now (a call's frame, written without suspending) on a socket whose transport is closed and
    # whose loss the receive side has not seen yet: the transport drops what it is given then.
    conn = await connected(recorder)
    try:
        first = conn._ws
        assert first is not None
        first.transport.abort()
        if path == "send_now":
            conn.send_now('{"call":1}', "call-1")
            assert conn.queued_keys() == {"call-1"}  # queued for the next socket, not "written" to the dead one
        else:
            assert conn.write_now('{"call":1}') is False  # the caller queues it (send_soon), as the SDK does
            conn.send_soon('{"call":1}', "call-1")
        await ready_again(conn, first)
        await recorder.wait_for(lambda: '{"call":1}' in recorder.frames)
        assert recorder.frames.count('{"call":1}') == 1 and len(recorder.connections) == 2
    finally:
        await conn.close()


async def test_a_pinned_frame_on_a_socket_already_closed_is_refused_and_never_sent(recorder: Recorder) -> None:
    conn = await connected(recorder)
    try:
        first = conn._ws
        assert first is not None
        first.transport.abort()
        assert await conn.send_on_this_connection("pinned") is False
        conn.send_soon("after")
        await ready_again(conn, first)
        await recorder.wait_for(lambda: "after" in recorder.frames)
        assert "pinned" not in recorder.frames
    finally:
        await conn.close()


async def test_close_while_sends_wait_on_a_stalled_socket_ends_them_within_the_close_timeout(
        recorder: Recorder) -> None:
    conn = await connected(recorder, send_timeout=60.0, close_timeout=0.3)
    try:
        await stall(recorder, conn)
        waiting = [asyncio.ensure_future(conn.send(FILLER)) for _ in range(5)]
        pinned = asyncio.ensure_future(conn.send_on_this_connection("pinned"))
        await asyncio.sleep(0.05)
        assert not pinned.done()
    finally:
        began = time.monotonic()
        await conn.close()
        took = time.monotonic() - began
        drop_server_side(recorder)
    assert took < 2.0  # not send_timeout (60 s), nor websockets' 10 s close waits
    assert await asyncio.wait_for(pinned, 2) is False  # dropped unsent, its sender told
    for send in waiting:  # queued behind the backlog, discarded with it; none hangs
        await asyncio.wait_for(send, 2)
    assert conn.state == "disconnected"


async def test_a_pinned_frame_behind_waiting_sends_is_refused_naming_the_full_queue(recorder: Recorder) -> None:
    conn = await connected(recorder, max_queue=3, queue_wait=5.0)
    try:
        await stall(recorder, conn)
        while len(conn._backlog) < 3:
            conn.send_soon(FILLER)
        waiting = asyncio.ensure_future(conn.send("waits-for-room"))
        await asyncio.sleep(0.01)
        assert conn._waiting
        with pytest.raises(ConnectionLostError, match="outbound queue is full"):
            await conn.send_on_this_connection("pinned")
        recorder.connections[-1].transport.resume_reading()
        assert await asyncio.wait_for(waiting, 10) is False  # admitted to the queue, then flushed
        await recorder.wait_for(lambda: "waits-for-room" in recorder.frames)
        assert "pinned" not in recorder.frames
    finally:
        await conn.close()


async def test_a_pinned_sender_cancelled_at_each_await_never_gets_its_frame_written_after_saying_so(
        recorder: Recorder) -> None:
    # Cancelled while queued: never written. Cancelled while its own write drains: written (that is what the write
    # was), and nothing else is disturbed: the frames after it go out in order.
    conn = await connected(recorder)
    try:
        await stall(recorder, conn)
        queued = asyncio.ensure_future(conn.send_on_this_connection("queued-cancelled"))
        await asyncio.sleep(0)
        kept = asyncio.ensure_future(conn.send_on_this_connection("kept"))
        await asyncio.sleep(0)
        conn.send_soon("after")
        queued.cancel()
        recorder.connections[-1].transport.resume_reading()
        assert await asyncio.wait_for(kept, 10) is True
        await recorder.wait_for(lambda: "after" in recorder.frames)
        texts = [f for f in recorder.frames if f != FILLER]
        assert texts == ["kept", "after"]
        assert conn._pinned == 0
    finally:
        await conn.close()


async def test_a_pinned_frame_after_reconnection_gave_up_is_refused_and_a_plain_send_raises(
        recorder: Recorder) -> None:
    from iii import ReconnectionConfig

    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set,
                      reconnection=ReconnectionConfig(initial_delay_ms=5, max_delay_ms=5, jitter_factor=0.0,
                                                      max_retries=1))
    await conn.start()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert recorder.server is not None
        recorder.server.close()  # no more connections
        recorder.connections[0].transport.abort()
        await until(lambda: conn.gave_up)
        assert await conn.send_on_this_connection("pinned") is False
        with pytest.raises(ConnectionLostError, match="gave up"):
            await conn.send("plain")
    finally:
        await conn.close()


async def test_a_storm_of_senders_while_the_socket_drops_duplicates_nothing_and_keeps_each_senders_order(
        recorder: Recorder) -> None:
    """Four kinds of sender, each numbering its frames, while the server cuts the connection at random moments.

    Received: never twice, and in each sender's order. A pinned frame reported False was never received. At the
    end every sender's frames handed over after the last cut, once the socket is back, all arrive."""
    conn = await connected(recorder)
    rng = random.Random(1234)
    told_false: set[str] = set()
    raised: set[str] = set()
    stop = asyncio.Event()

    async def sender(kind: str, name: str) -> None:
        seq = 0
        while not stop.is_set():
            frame = f"{name}:{seq:05d}:" + "p" * rng.choice((0, 0, 3000))
            seq += 1
            if kind == "send":
                await conn.send(frame)
            elif kind == "send_soon":
                conn.send_soon(frame)
            elif kind == "send_now":
                conn.send_now(frame)
            else:
                try:
                    if await conn.send_on_this_connection(frame) is False:
                        told_false.add(frame)
                except (ConnectionLostError, OutboundQueueFullError):
                    raised.add(frame)
            await asyncio.sleep(0 if rng.random() < 0.8 else 0.001)

    kinds = ("send", "send_soon", "send_now", "pinned")
    names = [f"{kind}{n}" for kind in kinds for n in range(2)]
    tasks = [asyncio.ensure_future(sender(name.rstrip("01"), name)) for name in names]
    try:
        for _ in range(30):
            await asyncio.sleep(rng.uniform(0.005, 0.05))
            recorder.connections[-1].transport.abort()
            ws = conn._ws
            await ready_again(conn, ws)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        conn.send_soon("the-end")
        await recorder.wait_for(lambda: "the-end" in recorder.frames)
        received = [f for f in recorder.frames if isinstance(f, str) and f != "the-end"]
        assert len(received) == len(set(received)), "a frame was received twice"
        for name in names:
            seqs = [int(f.split(":")[1]) for f in received if f.split(":")[0] == name]
            assert seqs == sorted(seqs), f"{name}: order broken"
            assert seqs, f"{name}: nothing received"
        assert not told_false & set(received), "a pinned frame reported unsent was received"
        assert len(recorder.connections) >= 30
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await conn.close()


async def test_a_send_timeout_during_the_replay_drops_the_socket_and_the_next_one_replays_again(
        recorder: Recorder) -> None:
    opened = 0
    big = "r" * (256 << 10)

    async def on_open(write: object) -> None:
        nonlocal opened
        opened += 1
        if opened == 1:
            # the server stops reading and the client's buffers are small: the replay's writes back up
            recorder.connections[-1].transport.pause_reading()
            ws = conn._ws
            assert ws is not None
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        for _ in range(4):
            await write(big)  # type: ignore[operator]
        await write(f"replayed-{opened}")  # type: ignore[operator]

    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_open=on_open, on_ready=ready.set,
                      reconnection=FAST, send_timeout=0.3)
    began = time.monotonic()
    await conn.start()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        took = time.monotonic() - began
        await recorder.wait_for(lambda: "replayed-2" in recorder.frames)
        assert opened == 2 and "replayed-1" not in recorder.frames
        assert 0.3 <= took < 3.0
    finally:
        await conn.close()
        drop_server_side(recorder)


async def test_a_socket_lost_during_the_replay_without_a_failed_write_is_never_declared_ready(
        recorder: Recorder) -> None:
    # The loss is seen (the receive side closed the socket) while on_open runs, and no write fails to tell. Before,
    # on_ready ran for the dead socket: what it sends (the SDK: the worker's registration) waited for the next
    # socket and went out there a second time, after that socket's own.
    opened = 0
    readies = 0

    async def on_open(write: object) -> None:
        nonlocal opened
        opened += 1
        if opened == 1:
            ws = conn._ws
            assert ws is not None
            recorder.connections[-1].transport.abort()
            await asyncio.wait_for(ws.wait_closed(), 10)

    def on_ready() -> None:
        nonlocal readies
        readies += 1
        conn.send_soon(f"register-worker-{readies}")

    conn = Connection(recorder.url, on_frame=lambda raw: None, on_open=on_open, on_ready=on_ready,
                      reconnection=FAST)
    await conn.start()
    try:
        await recorder.wait_for(lambda: len(recorder.connections) == 2 and recorder.frames)
        await until(lambda: not conn._backlog)
        assert opened == 2 and readies == 1
        assert recorder.frames == ["register-worker-1"]
    finally:
        await conn.close()


async def test_a_send_timeout_during_the_backlog_flush_keeps_the_unwritten_frames_for_the_next_socket_once(
        recorder: Recorder) -> None:
    conn = await connected(recorder, send_timeout=0.3)
    try:
        first = conn._ws
        await stall(recorder, conn)  # the flusher waits for the stalled socket with frames still queued
        for i in range(5):
            conn.send_soon(f"queued-{i}")
        await until(lambda: conn._ws is not first and conn.is_ready)  # dropped after send_timeout, a new one up
        await recorder.wait_for(lambda: "queued-4" in recorder.frames)
        texts = [f for f in recorder.frames if f != FILLER]
        assert texts == [f"queued-{i}" for i in range(5)]  # each once, in order, on the next socket
    finally:
        await conn.close()
        drop_server_side(recorder)


async def test_a_send_timeout_racing_the_engines_normal_close_replaces_the_socket_cleanly(
        recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    conn = await connected(recorder, send_timeout=0.3, close_timeout=0.3)
    try:
        first = conn._ws
        await stall(recorder, conn)
        assert await conn.send("queued") is False  # behind the backlog, which the flusher waits to write
        await asyncio.sleep(0.28)  # (the close is to race the flusher's bound: started just before it expires)
        closing = asyncio.ensure_future(recorder.connections[0].close())
        await until(lambda: conn._ws is not first and conn.is_ready)
        conn.send_soon("after")
        await recorder.wait_for(lambda: "after" in recorder.frames)
        assert [f for f in recorder.frames if f != FILLER] == ["queued", "after"]
        drop_server_side(recorder)
        await asyncio.wait_for(closing, 5)
        assert not [r for r in caplog.records if "Serving the connection" in r.getMessage()]
    finally:
        await conn.close()
        drop_server_side(recorder)
