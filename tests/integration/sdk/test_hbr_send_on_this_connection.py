"""``Connection.send_on_this_connection``: a frame handed over while a socket is up leaves on that socket, in order,
or is dropped with its sender told False when that socket is lost first; it never goes out on the next one.

Before, the only way to send (``Connection.send``) queued a frame behind a backlog still draining and, when the
socket dropped first, wrote it on the next socket long after its sender had been told nothing failed (the bridge's
``fire`` then ran a void call on the remote after a reconnect). ``send`` keeps that behaviour (the reference SDK's).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from iii import ReconnectionConfig
from iii.connection import Connection
from iii.errors import ConnectionLostError

pytestmark = pytest.mark.timeout(30)

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=10, jitter_factor=0.0)
SMALL_BUFFER = 4096  # socket buffers of a few KiB: a stalled reader backs the client up after ~50 KiB, not MBs
FILLER = "f" * 8192


class Recorder:
    """A WebSocket server keeping every text frame of every connection; it can stop reading (a stalled engine)."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []
        self.connections: list[ServerConnection] = []
        self.changed = asyncio.Condition()
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, ws: ServerConnection) -> None:
        async with self.changed:
            self.connections.append(ws)
            self.changed.notify_all()
        async for raw in ws:
            async with self.changed:
                self.frames.append(raw)
                self.changed.notify_all()

    async def wait_for(self, predicate: object) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(predicate)  # type: ignore[arg-type]

    def texts(self) -> list[str]:
        """The frames received, fillers left out."""
        return [f for f in self.frames if isinstance(f, str) and not f.startswith("f")]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # inherited by the accepted sockets
    listener.bind(("127.0.0.1", 0))
    async with serve(rec.handle, sock=listener) as server:
        rec.server = server
        yield rec


async def connected(recorder: Recorder, **options: object) -> Connection:
    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set, reconnection=FAST,
                      **options)  # type: ignore[arg-type]
    await conn.start()
    await asyncio.wait_for(ready.wait(), 10)
    return conn


async def stall(recorder: Recorder, conn: Connection) -> None:
    """The server stops reading; frames are queued with send_soon until the client's backlog stays non-empty (its
    flusher waits for the socket to drain)."""
    recorder.connections[-1].transport.pause_reading()
    ws = conn._ws
    assert ws is not None
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    for _ in range(2000):
        conn.send_soon(FILLER)
        await asyncio.sleep(0.001)
        if len(conn._backlog) >= 2:
            return
    pytest.fail("the client's backlog never backed up behind the stalled server")


async def test_a_frame_queued_behind_a_backlog_is_dropped_when_its_socket_is_lost_and_never_sent_on_the_next(
        recorder: Recorder) -> None:
    conn = await connected(recorder)
    try:
        await stall(recorder, conn)
        pinned = asyncio.ensure_future(conn.send_on_this_connection("pinned"))
        await asyncio.sleep(0)  # handed over (the task's first step) before what follows
        conn.send_soon("after")  # an ordinary frame of the loop's own: kept for the next socket, as always
        await asyncio.sleep(0.05)
        assert not pinned.done()  # waits its turn behind the backlog
        recorder.connections[0].transport.abort()
        assert await asyncio.wait_for(pinned, 10) is False
        await recorder.wait_for(lambda: "after" in recorder.texts())  # the next socket drained the backlog
        assert len(recorder.connections) == 2
        assert recorder.texts() == ["after"]  # "pinned" went out on neither socket
        assert conn._pinned == 0
    finally:
        await conn.close()


async def test_a_frame_queued_behind_a_backlog_is_written_in_its_turn_when_its_socket_survives(
        recorder: Recorder) -> None:
    conn = await connected(recorder)
    try:
        conn.send_soon("before")
        await stall(recorder, conn)
        pinned = asyncio.ensure_future(conn.send_on_this_connection("pinned"))
        await asyncio.sleep(0)  # handed over (the task's first step) before what follows
        conn.send_soon("after")
        await asyncio.sleep(0.05)
        assert not pinned.done()
        recorder.connections[0].transport.resume_reading()
        assert await asyncio.wait_for(pinned, 10) is True
        await recorder.wait_for(lambda: "after" in recorder.texts())
        assert recorder.texts() == ["before", "pinned", "after"]  # in order: it overtook nothing, nothing overtook it
        assert recorder.frames.index("pinned") > max(i for i, f in enumerate(recorder.frames) if f == FILLER)
        assert len(recorder.connections) == 1
    finally:
        await conn.close()


async def test_with_no_socket_up_it_is_refused_at_once_and_nothing_is_queued(recorder: Recorder) -> None:
    ready = asyncio.Event()
    conn = Connection(recorder.url, on_frame=lambda raw: None, on_ready=ready.set, reconnection=FAST)
    assert await conn.send_on_this_connection("offline") is False
    assert not conn._backlog
    await conn.start()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert await conn.send_on_this_connection("online") is True  # nothing queued: written at once
        await recorder.wait_for(lambda: recorder.frames)
        assert recorder.frames == ["online"]
    finally:
        await conn.close()


async def test_a_full_queue_refuses_it_at_once_naming_the_queue(recorder: Recorder) -> None:
    conn = await connected(recorder, max_queue=3)
    try:
        await stall(recorder, conn)
        while len(conn._backlog) < 3:
            conn.send_soon(FILLER)
        with pytest.raises(ConnectionLostError, match=r"never sent: the outbound queue is full \(3 frames"):
            await conn.send_on_this_connection("pinned")
        assert all(frame == FILLER for frame, _ in conn._backlog) and conn._pinned == 0
    finally:
        recorder.connections[-1].transport.resume_reading()  # (else both closes wait out their timeouts)
        await conn.close()


async def test_a_sender_that_stops_waiting_takes_its_frame_back(recorder: Recorder) -> None:
    conn = await connected(recorder)
    try:
        await stall(recorder, conn)
        pinned = asyncio.ensure_future(conn.send_on_this_connection("pinned"))
        await asyncio.sleep(0)  # handed over (the task's first step) before what follows
        conn.send_soon("after")
        await asyncio.sleep(0.05)
        pinned.cancel()
        recorder.connections[0].transport.resume_reading()
        await recorder.wait_for(lambda: "after" in recorder.texts())
        assert recorder.texts() == ["after"]
    finally:
        await conn.close()


async def test_an_ordinary_send_behind_a_backlog_still_goes_out_on_the_next_socket(recorder: Recorder) -> None:
    # unchanged (the reference SDK's behaviour, which trigger with a void action keeps): queued, never dropped
    conn = await connected(recorder)
    try:
        await stall(recorder, conn)
        assert await conn.send("plain") is False  # queued
        recorder.connections[0].transport.abort()
        await recorder.wait_for(lambda: "plain" in recorder.texts())
        assert len(recorder.connections) == 2
    finally:
        await conn.close()


@pytest.mark.parametrize("dropped", [False, True], ids=["kept-up", "dropped"])
async def test_a_frame_handed_over_while_the_socket_replays_waits_for_the_replay_and_goes_only_on_that_socket(
        recorder: Recorder, dropped: bool) -> None:
    # The socket is up (state connected) but not ready: registrations are replayed first, then the backlog.
    opened, release = asyncio.Event(), asyncio.Event()

    async def on_open(write: object) -> None:
        if not opened.is_set():
            opened.set()
            await release.wait()
        await write("replay")  # type: ignore[operator]

    conn = Connection(recorder.url, on_frame=lambda raw: None, on_open=on_open, reconnection=FAST)
    await conn.start()
    try:
        await asyncio.wait_for(opened.wait(), 10)
        assert conn.state == "connected" and not conn.is_ready
        pinned = asyncio.ensure_future(conn.send_on_this_connection("pinned"))
        await asyncio.sleep(0)
        conn.send_soon("after")
        if dropped:
            recorder.connections[0].transport.abort()
            ws = conn._ws
            assert ws is not None
            await asyncio.wait_for(ws.wait_closed(), 10)  # the client's socket saw the loss (its replay still waits)
        release.set()
        assert await asyncio.wait_for(pinned, 10) is not dropped
        await recorder.wait_for(lambda: "after" in recorder.texts())
        if dropped:
            assert recorder.texts() == ["replay", "after"] and len(recorder.connections) == 2
        else:
            assert recorder.texts() == ["replay", "pinned", "after"] and len(recorder.connections) == 1
    finally:
        release.set()
        await conn.close()
