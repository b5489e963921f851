"""``max_queued_bytes``: the bytes of frames waiting for all of a socket's clients together are bounded; past it the
client furthest behind is closed with 1013 and its frames let go. Frames shared between clients count once, a
client's next frame never counts (its own size closes nobody), and a sync a join repeats is queued once.

Before, only ``client_queue_bytes`` bounded each client: silent clients that each joined a 1 MB group 40 times
held 31 MB of their own syncs apiece (20 of them: 68 -> 682 MB), never closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from iii_engine.modules.stream import socket as stream_socket
from iii_engine.modules.stream.socket import Subscription, _QueuedBytes, _sync_frame

KiB = 1024


class _Peer:
    remote_address = ("127.0.0.1", 1)
    close_timeout = 0.0

    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def _clients(pool: _QueuedBytes, count: int) -> list[Any]:
    clients = [stream_socket._Client(_Peer(), None, 1024, 1.0, 1024 * KiB, pool)  # type: ignore[arg-type]
               for _ in range(count)]
    pool.clients.update(clients)
    return clients


async def _settled(clients: list[Any]) -> None:
    await asyncio.gather(*(c.closer for c in clients if c.closer is not None))


async def test_past_the_bound_the_client_furthest_behind_is_closed_and_let_go() -> None:
    pool = _QueuedBytes(100 * KiB)
    behind, other, small = _clients(pool, 3)
    for n in range(2):
        other.offer(bytes([n]) * 20 * KiB)
    small.offer(b"e" * KiB)
    for n in range(2):
        behind.offer(bytes([n]) * 20 * KiB)  # its own frames, as syncs are
    assert pool.total == 81 * KiB and not behind.overflowed
    behind.offer(b"z" * 20 * KiB)  # 101 KiB: over
    await _settled([behind, other, small])
    assert behind.overflowed and behind.ws.closed_with[0] == 1013
    assert "max_queued_bytes" in behind.ws.closed_with[1]
    assert behind.queue.empty() and behind.queued_bytes == 0  # let go at once, not at the close's end
    assert not other.overflowed and not small.overflowed
    assert pool.total == 41 * KiB


async def test_a_frame_waiting_for_many_clients_counts_once() -> None:
    pool = _QueuedBytes(100 * KiB)
    clients = _clients(pool, 50)
    event = b"e" * 10 * KiB  # one event's frame, shared by every socket it goes to
    for client in clients:
        client.offer(event)
        client.offer(event)  # (and twice each)
    await _settled(clients)
    assert pool.total == 10 * KiB
    assert not any(client.overflowed for client in clients)


async def test_a_client_s_next_frame_never_counts_against_it() -> None:
    """A sync bigger than the bound reaches a client that reads (its writer takes it next)."""
    pool = _QueuedBytes(100 * KiB)
    reader, other = _clients(pool, 2)
    reader.offer(b"s" * 400 * KiB)
    other.offer(b"e" * KiB)
    await _settled([reader, other])
    assert not reader.overflowed and not other.overflowed
    assert pool.total == 401 * KiB  # over, with nobody behind: nobody closed
    other.offer(b"f" * KiB)  # other's first frame is its next one: 1 KiB behind, far within its share
    await _settled([reader, other])
    assert not other.overflowed


async def test_frames_held_during_a_join_count_and_are_let_go() -> None:
    pool = _QueuedBytes(100 * KiB)
    (client,) = _clients(pool, 1)
    client.hold()
    for n in range(3):
        client.offer(bytes([n]) * 10 * KiB)
    assert pool.total == 30 * KiB and client.behind_bytes() == 30 * KiB
    client.release(b"sync" * KiB)
    assert pool.total == 34 * KiB and client.queue.qsize() == 4
    client.drop()
    assert pool.total == 0


async def test_a_repeated_sync_still_waiting_is_the_same_bytes() -> None:
    pool = _QueuedBytes(100 * KiB)
    first, second = _clients(pool, 2)
    sub = Subscription("s", "g", None)
    items = "[" + ",".join(['"' + "x" * 1000 + '"'] * 20) + "]"
    sync = pool.same_sync(sub, _sync_frame("s", "g", items))
    first.offer(sync)
    pool.keep_sync(sub, sync)
    for client in (first, first, second):  # joins under other ids, and another client's
        again = pool.same_sync(sub, _sync_frame("s", "g", items))
        assert again is sync
        client.offer(again)
    changed = pool.same_sync(sub, _sync_frame("s", "g", items.replace("x", "y", 1)))
    assert changed is not sync  # the group changed: its own sync
    assert pool.total == len(sync)
    first.drop()
    second.drop()
    assert pool.total == 0
    assert pool.same_sync(sub, _sync_frame("s", "g", items)) is not sync  # let go: not kept for later joins


async def test_stalled_clients_are_closed_before_a_reader_in_a_burst(monkeypatch: Any) -> None:
    """Silent clients whose writers wait on them, each holding only its next frame, kept the bytes over the limit
    uncounted, and the one client with frames behind its next, an honest reader in a burst, was closed instead,
    freeing almost nothing. Clients that took nothing for the grace go first now, their next frame counted."""
    from polling import until

    monkeypatch.setattr(stream_socket, "_SHED_GRACE_S", 0.05)
    pool = _QueuedBytes(100 * KiB)
    silent = _clients(pool, 4)
    reader, = _clients(pool, 1)
    for client in [*silent, reader]:
        client.writing = True  # each writer waits on its socket, a frame being written
    for n, client in enumerate(silent):
        client.offer(bytes([n]) * 50 * KiB)  # its next frame: 200 KiB over 4 clients, none behind it
    for n in range(3):
        reader.offer(bytes([100 + n]) * 16 * KiB)
        reader.writes += 1  # (it reads: its writer moves on between the frames)
    assert not reader.overflowed  # no reader closed while the others may yet read
    await until(lambda: pool.total <= pool.limit, within=5)
    assert not reader.overflowed
    assert sum(client.overflowed for client in silent) == 3  # until the bytes are back under the limit
    await _settled([*silent, reader])


async def test_a_look_again_still_to_come_is_cancelled_at_close(monkeypatch: Any) -> None:
    """Clients that may yet read leave a look again scheduled for when their grace ends; the socket's close cancels
    it (before: it stayed on the loop past the module's stop, and ran over a closed socket's bookkeeping)."""
    monkeypatch.setattr(stream_socket, "_SHED_GRACE_S", 30.0)
    pool = _QueuedBytes(100 * KiB)
    silent = _clients(pool, 3)
    for n, client in enumerate(silent):
        client.writing = True
        client.offer(bytes([n]) * 50 * KiB)  # over the limit, none of them stalled yet
    recheck = pool._recheck
    assert recheck is not None and not recheck.cancelled()
    pool.close()
    assert recheck.cancelled() and pool._recheck is None
    assert not any(client.overflowed for client in silent)
