"""The worker outbox: inline sends on the call path keep the order and the bounds of queued posts."""

from __future__ import annotations

import asyncio

from iii.ws_fastpath import WROTE, WROTE_OVER_MARK
from iii_engine.workers import Outbox


class Peer:
    """A send callable that records frames and can be held back like a socket under flow control."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.senders: list[asyncio.Task[object] | None] = []
        self.open = asyncio.Event()
        self.open.set()
        self.flushes = 0
        self.entered = asyncio.Event()

    async def send(self, text: str) -> None:
        self.senders.append(asyncio.current_task())
        self.entered.set()
        await self.open.wait()
        self.frames.append(text)

    def flush(self) -> None:
        self.flushes += 1


async def test_send_writes_from_the_calling_task_when_idle() -> None:
    peer = Peer()
    box = Outbox(peer.send, flush=peer.flush)
    assert await box.send("a")
    # written by the caller itself, with no wake-up of the sender task, and flushed at once
    assert peer.frames == ["a"] and peer.senders == [asyncio.current_task()] and peer.flushes == 1
    await box.close()


async def test_frames_posted_during_an_inline_send_follow_it_in_order() -> None:
    peer = Peer()
    peer.open.clear()  # the socket's flow control holds the inline write back
    box = Outbox(peer.send, flush=peer.flush)
    inline = asyncio.create_task(box.send("first"))
    await peer.entered.wait()
    assert box.post("second") and box.post("third")
    for _ in range(5):  # give the sender task its chances to (wrongly) write ahead of the inline frame
        await asyncio.sleep(0)
    assert len(peer.senders) == 1 and peer.frames == []
    assert box.queued_bytes == len("first") + len("second") + len("third")
    sent_later = asyncio.create_task(box.send("fourth"))  # queued behind the others, never overtakes
    peer.open.set()
    assert await inline and await sent_later
    await box.close()  # flushes the queue
    assert peer.frames == ["first", "second", "third", "fourth"]
    assert box.queued_bytes == 0


async def test_a_failed_inline_send_closes_the_outbox() -> None:
    async def broken(text: str) -> None:
        raise ConnectionError("gone")

    box = Outbox(broken)
    assert not await box.send("a")
    assert box.closed and not box.post("b") and box.queued_bytes == 0
    await box.close()


async def test_send_on_a_full_byte_bound_overflows_like_post() -> None:
    peer = Peer()
    peer.open.clear()
    overflowed: list[int] = []
    box = Outbox(peer.send, max_bytes=10, on_overflow=overflowed.append)
    inline = asyncio.create_task(box.send("12345678"))
    await peer.entered.wait()
    assert not await box.send("abcdef")  # 8 + 6 > 10 bytes while the first is still being written
    assert overflowed == [14] and box.closed
    peer.open.set()
    await inline
    await box.close()


class Socket:
    """A ``write_now`` that takes frames while open and says when its buffer went over the high mark."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bool]] = []
        self.takes = True
        self.over_mark = False
        self.drain = asyncio.Event()
        self.drain.set()

    def write_now(self, text: str, hold: bool) -> int:
        if not self.takes:
            return 0
        self.frames.append((text, hold))
        return WROTE_OVER_MARK if self.over_mark else WROTE

    async def drained(self) -> None:
        await self.drain.wait()


async def test_post_writes_at_once_when_idle_and_queues_behind_what_waits() -> None:
    peer, sock = Peer(), Socket()
    box = Outbox(peer.send, write_now=sock.write_now, drained=sock.drained)
    assert box.post("a")
    assert sock.frames == [("a", False)] and peer.frames == []  # no wake-up of the sender task
    sock.takes = False  # the socket's flow control holds writes back: queued, then sent by the sender task
    assert box.post("b")
    sock.takes = True
    assert box.post("c")  # behind "b", never ahead of it
    await box.close()
    assert peer.frames == ["b", "c"] and [text for text, _ in sock.frames] == ["a"]
    assert await Outbox(peer.send, write_now=sock.write_now, drained=sock.drained).send("d", flush=False)
    assert sock.frames[-1] == ("d", True)  # held for the turn's one write


async def test_a_frame_written_over_the_mark_counts_until_the_socket_drains() -> None:
    peer, sock = Peer(), Socket()
    overflowed: list[int] = []
    box = Outbox(peer.send, max_bytes=10, on_overflow=overflowed.append, write_now=sock.write_now,
                 drained=sock.drained)
    sock.over_mark = True
    sock.drain.clear()
    assert box.post("12345678")
    assert box.queued_bytes == 8 and box.must_wait(3)  # as if the sender task were writing it
    assert box.post("x")  # queued behind it, not written ahead
    assert not box.post("abc")  # 8 + 1 + 3 > 10: overflow, as when the sender task writes the frame
    assert overflowed == [12] and box.closed
    await box.close(flush=False)
    sock.over_mark = False
    box = Outbox(peer.send, max_bytes=10, write_now=sock.write_now, drained=sock.drained)
    sock.over_mark = True
    assert box.post("12345678") and box.queued_bytes == 8
    sock.drain.set()
    await box.wait_for_room(5)  # room once the socket drained
    assert box.queued_bytes == 0
    await box.close()
    assert [text for text, _ in sock.frames] == ["12345678", "12345678"] and peer.frames == []


class Frame:
    """A frame's owner (workers.Handover): told when the frame goes to the socket."""

    def __init__(self) -> None:
        self.handed = False


async def test_frames_dropped_unwritten_at_close_are_never_told_handed() -> None:
    """Before, the outbox did not say which of its frames it dropped unwritten at a close: the engine told every
    call it had taken "may have run", those that never left the engine too."""
    peer = Peer()
    peer.open.clear()  # the socket's flow control holds the first write back: the rest queue behind it
    box = Outbox(peer.send, flush=peer.flush)
    tags = [Frame() for _ in range(4)]
    inline = asyncio.create_task(box.send("first", tag=tags[0]))
    await peer.entered.wait()
    assert box.post("second", tags[1]) and box.post("third", tags[2])
    await box.close(flush=False)  # the connection is lost: the queue is dropped unwritten
    assert not box.post("fourth", tags[3])
    assert [tag.handed for tag in tags] == [True, False, False, False]
    inline.cancel()


async def test_frames_written_inline_or_by_the_sender_task_are_told_handed() -> None:
    written: list[str] = []

    def write_now(text: str, hold: bool) -> int:
        written.append(text)
        return WROTE

    async def drained() -> None:
        return None

    peer = Peer()
    box = Outbox(peer.send, flush=peer.flush, write_now=write_now, drained=drained)
    posted, sent = Frame(), Frame()
    assert box.post("a", posted) and await box.send("b", tag=sent)
    assert posted.handed and sent.handed and written == ["a", "b"]
    queued = Frame()
    peer_only = Outbox(peer.send)  # no inline writes: the sender task hands the frame to the socket
    assert peer_only.post("c", queued)
    await peer_only.close()
    assert queued.handed and peer.frames == ["c"]
    await box.close()
