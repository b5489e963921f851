"""One connected worker: its identity, metadata, what it owns, and its ordered outbound queue.

The outbound queue never blocks the code that posts to it (so one slow worker cannot stall the engine's other
work); callers that want production's back-pressure ("when the 64-message queue is full the engine waits")
``await outbox.wait_for_room()`` first, which the invocation path does.

Example:
    >>> import asyncio
    >>> async def demo() -> list[str]:
    ...     sent: list[str] = []
    ...     async def send(text: str) -> None:
    ...         sent.append(text)
    ...     box = Outbox(send, limit=2)
    ...     box.post('{"type":"pong"}')
    ...     await box.close()  # flushes what is queued
    ...     return sent
    >>> asyncio.run(demo())
    ['{"type":"pong"}']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.protocol.worker_session import WorkerSession
from iii.ws_fastpath import WROTE, WROTE_OVER_MARK

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 64
#: Bytes (UTF-8) a peer may leave unread in its queue, counting the frame being written; past it the peer is
#: disconnected with :data:`OVERFLOW_CLOSE_CODE`.
OUTBOX_MAX_BYTES = 16 * 1024 * 1024
#: Close code for a peer that does not read what it is sent (1008, policy violation).
OVERFLOW_CLOSE_CODE = 1008
#: ``write_now(text, hold)``: write ``text`` now without waiting and return :data:`~iii.ws_fastpath.WROTE`
#: (:data:`~iii.ws_fastpath.WROTE_OVER_MARK` when the socket's buffer is now over its high mark: the frame then
#: counts as being written until ``drained`` returns), or 0 when the socket may not take it now (closed, or its flow
#: control holds writes back); ``hold``: more frames are likely in this event-loop turn.
WriteNow = Callable[[str, bool], int]


def frame_bytes(text: str) -> int:
    """The UTF-8 size of a text frame (ASCII, the common case, without encoding it)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class Ending(Protocol):
    """A call whose wait for room :meth:`Outbox.wait_for_room` gives up once it has ended."""

    ended: bool


class Handover(Protocol):
    """The owner of a frame (:meth:`Outbox.post`'s ``tag``): :class:`Outbox` sets ``handed`` once the frame is
    handed to the socket (or may have been, in part); a frame the queue dropped unwritten never has it set."""

    handed: bool


class Outbox:
    """An ordered, non-blocking queue of text frames drained by one sender task, bounded in frames and bytes.

    ``limit`` frames is the soft bound: :meth:`wait_for_room` waits while it is reached (and while the next frame
    would not fit in ``max_bytes``). ``max_bytes`` is the hard bound for frames posted without waiting: the frame
    that would cross it is refused, the queue is emptied and ``on_overflow`` is called once (the engine then
    disconnects the peer). A single frame larger than ``max_bytes`` is still accepted when nothing else is queued.

    A frame posted with a ``tag`` (:class:`Handover`) has ``tag.handed`` set when it goes to the socket: one whose
    queue was dropped first (a close without flush, an overflow, a failed socket) never left the engine.
    """

    def __init__(self, send: Callable[[str], Awaitable[None]], *, limit: int = OUTBOX_LIMIT,
                 max_bytes: int = OUTBOX_MAX_BYTES, on_overflow: Callable[[int], None] | None = None,
                 flush: Callable[[], None] | None = None, write_now: WriteNow | None = None,
                 drained: Callable[[], Awaitable[None]] | None = None) -> None:
        if limit < 1 or max_bytes < 1:
            raise ValueError(f"Outbox limit and max_bytes must be positive, got {limit} and {max_bytes}")
        if (write_now is None) != (drained is None):
            raise ValueError("Outbox write_now and drained go together")
        self._send = send
        self._write_now = write_now
        self._drained = drained
        #: bytes of a frame written by :meth:`post` over the socket's high mark, counted until the socket drains
        self._written = 0
        self._limit = limit
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._flush = flush  # writes out what ``send`` may have held back, once the queue runs empty
        self._busy = False  # a frame is being written (by the sender task or inline by :meth:`send`)
        self._items: deque[tuple[str, int, Handover | None]] = deque()
        self._bytes = 0  # queued plus the frame being written
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        #: tasks in :meth:`wait_for_room` now
        self.waiting = 0
        self._closed = False
        self.overflowed = False
        self._task = asyncio.get_running_loop().create_task(self._drain())

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """UTF-8 bytes queued or being written."""
        return self._bytes

    @property
    def closed(self) -> bool:
        """True once the connection is gone; posts are dropped from then on."""
        return self._closed

    def post(self, text: str, tag: Handover | None = None) -> bool:
        """Queue one frame; ``False`` if the connection is closed or this frame overflowed the byte bound.
        ``tag``: told when the frame is handed to the socket (:class:`Handover`)."""
        if self._closed:
            return False
        if self._write_now is not None and not self._items and not self._busy:
            # Nothing queued or being written: the frame goes to the socket from here, without waking the sender
            # task (two loop turns and a callback per frame, issue 10); the socket refuses it while its own flow
            # control holds writes back, and it is queued as ever.
            try:
                wrote = self._write_now(text, False)
            except Exception as exc:
                if tag is not None:
                    tag.handed = True  # part of it may have been written
                self._broken(exc)
                return False
            if wrote:
                if tag is not None:
                    tag.handed = True
                if wrote == WROTE_OVER_MARK:
                    self._count_written(frame_bytes(text))
                return True
        size = frame_bytes(text)
        if self._bytes and self._bytes + size > self._max_bytes:
            self._overflow(size)
            return False
        self._items.append((text, size, tag))
        self._bytes += size
        self._ready.set()
        if len(self._items) >= self._limit:
            self._room.clear()
        return True

    def _count_written(self, size: int) -> None:
        """A frame written from :meth:`post` took the socket over its high mark: it counts as the frame being
        written (against ``max_bytes``, and holding later frames in the queue) until the sender task has seen the
        socket drain, as when the sender task writes it itself."""
        self._busy = True
        self._written = size
        self._bytes += size
        self._ready.set()

    def _overflow(self, size: int) -> None:
        held = self._bytes
        self._closed = True
        self.overflowed = True
        self._items.clear()  # release the memory now, not when the socket finally closes
        self._bytes = 0
        self._room.set()
        self._ready.set()
        if self._on_overflow is not None:
            self._on_overflow(held + size)

    def _full(self, size: int) -> bool:
        return len(self._items) >= self._limit or (self._bytes > 0 and self._bytes + size > self._max_bytes)

    def must_wait(self, size: int = 0) -> bool:
        """Whether :meth:`wait_for_room` for a ``size``-byte frame would wait now."""
        return not self._closed and self._full(size)

    async def wait_for_room(self, size: int = 0, call: Ending | None = None) -> None:
        """Wait while ``limit`` frames are queued or a ``size``-byte frame would not fit (at once when closed, or
        once ``call`` has ended: its owner calls :meth:`wake_waiters` when it ends one)."""
        if self._closed or not self._full(size):
            return
        self.waiting += 1
        try:
            while not self._closed and self._full(size) and not (call is not None and call.ended):
                self._room.clear()
                await self._room.wait()
        finally:
            self.waiting -= 1

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_for_room` to check again (those still without room wait on)."""
        self._room.set()

    async def send(self, text: str, size: int | None = None, *, flush: bool = True,
                   tag: Handover | None = None) -> bool:
        """Write ``text`` from the calling task when nothing is queued or being written (no wake-up of the sender
        task: the call path's latency), else queue it like :meth:`post`. The caller waits while the socket's own
        flow control holds the write back, so only callers that accept the peer's back-pressure use it.
        ``size``: :func:`frame_bytes` of ``text`` when the caller already has it. ``flush=False`` leaves a frame
        that ``send`` corked to go out with the others of this event-loop turn (the socket layer writes them at
        the end of the turn): a burst of inline sends then costs one socket write, not one each. ``tag``: as for
        :meth:`post`."""
        if self._items or self._busy or self._closed:
            return self.post(text, tag)
        wrote = 0
        if self._write_now is not None:
            try:
                wrote = self._write_now(text, not flush)
            except Exception as exc:
                if tag is not None:
                    tag.handed = True  # part of it may have been written
                self._broken(exc)
                return False
            if wrote == WROTE:
                if tag is not None:
                    tag.handed = True
                return True
        if tag is not None:
            tag.handed = True  # written over the high mark, or about to go to ``send``
        if size is None:
            size = frame_bytes(text)
        self._busy = True
        self._bytes += size
        try:
            if wrote:  # written over the socket's high mark: counted until it drains
                assert self._drained is not None
                await self._drained()
            else:
                await self._send(text)
                if flush and self._flush is not None and not self._items:
                    self._flush()
        except Exception as exc:
            self._broken(exc)
            return False
        finally:
            self._busy = False
            self._bytes = max(0, self._bytes - size)
            self._room.set()
            if self._items:
                self._ready.set()  # frames posted meanwhile: the sender task takes over
        return True

    async def _drain(self) -> None:
        try:
            while True:
                await self._ready.wait()
                if self._written:  # a frame post() wrote over the socket's high mark: counted until it drains
                    assert self._drained is not None
                    await self._drained()
                    self._bytes = max(0, self._bytes - self._written)
                    self._written = 0
                    self._busy = False
                    self._room.set()
                while self._items and not self._busy:
                    text, size, tag = self._items.popleft()
                    if len(self._items) < self._limit:
                        self._room.set()
                    if tag is not None:
                        tag.handed = True
                    self._busy = True
                    try:
                        await self._send(text)
                    finally:
                        self._busy = False
                    self._bytes = max(0, self._bytes - size)
                    self._room.set()
                    if self._flush is not None and not self._items:
                        self._flush()
                self._ready.clear()
                if self._closed:
                    return
        except Exception as exc:
            self._broken(exc)

    def _broken(self, exc: Exception) -> None:
        # the socket failed: the read side notices and cleans up
        log.debug("outbound send failed: %r", exc)
        self._closed = True
        self._items.clear()
        self._bytes = 0
        self._room.set()

    async def close(self, *, flush: bool = True) -> None:
        """Stop accepting frames; with ``flush``, wait until the queued ones are sent."""
        self._closed = True
        self._room.set()
        self._ready.set()
        if not flush:
            self._items.clear()
            self._bytes = 0
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class FunctionIds(set[str]):
    """A worker's function ids, counting their changes: its listing (:meth:`WorkerConnection.info`) is sorted once
    per change, not once per ``engine::workers::list`` (100,000 functions: a 39 ms sort per call per worker).

    Example:
        >>> ids = FunctionIds(); ids.add("b"); ids |= {"a"}; ids.discard("x"); ids.version
        3
    """

    __slots__ = ("version",)

    def __init__(self, ids: Iterable[str] = ()) -> None:
        super().__init__(ids)
        #: bumped by every call that may change the set (a no-op one too: a spare sort, never a stale listing)
        self.version = 0

    def add(self, item: str) -> None:
        """:meth:`set.add`, counted."""
        super().add(item)
        self.version += 1

    def discard(self, item: object) -> None:
        """:meth:`set.discard`, counted."""
        super().discard(item)
        self.version += 1

    def remove(self, item: str) -> None:
        """:meth:`set.remove`, counted."""
        super().remove(item)
        self.version += 1

    def pop(self) -> str:
        """:meth:`set.pop`, counted."""
        self.version += 1
        return super().pop()

    def clear(self) -> None:
        """:meth:`set.clear`, counted."""
        super().clear()
        self.version += 1

    def update(self, *others: Iterable[str]) -> None:
        """:meth:`set.update`, counted."""
        super().update(*others)
        self.version += 1

    def difference_update(self, *others: Iterable[Any]) -> None:
        """:meth:`set.difference_update`, counted."""
        super().difference_update(*others)
        self.version += 1

    def intersection_update(self, *others: Iterable[Any]) -> None:
        """:meth:`set.intersection_update`, counted."""
        super().intersection_update(*others)
        self.version += 1

    def symmetric_difference_update(self, other: Iterable[str]) -> None:
        """:meth:`set.symmetric_difference_update`, counted."""
        super().symmetric_difference_update(other)
        self.version += 1

    def __ior__(self, other: AbstractSet[str]) -> Self:  # type: ignore[override,misc]
        self.version += 1
        return super().__ior__(other)

    def __iand__(self, other: AbstractSet[object]) -> Self:
        self.version += 1
        return super().__iand__(other)

    def __isub__(self, other: AbstractSet[object]) -> Self:
        self.version += 1
        return super().__isub__(other)

    def __ixor__(self, other: AbstractSet[str]) -> Self:  # type: ignore[override,misc]
        self.version += 1
        return super().__ixor__(other)


@dataclass
class WorkerConnection:
    """State of one control-socket connection (a new one, with a new id, per reconnect)."""

    outbox: Outbox
    ip_address: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    connected_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    name: str | None = None
    runtime: str | None = None
    version: str | None = None
    os: str | None = None
    pid: int | None = None
    telemetry: Any = None
    functions: set[str] = field(default_factory=FunctionIds)
    external_functions: set[str] = field(default_factory=FunctionIds)
    trigger_types: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    #: calls this worker started through the engine that are not over (max_calls_per_worker, iii_engine.limits)
    calls: int = 0
    #: of those, its built-in calls and enqueue actions: bounded apart from its calls of worker functions, so
    #: calls a hung callee never answers cannot starve the engine's own functions (listing functions, channels)
    builtin_calls: int = 0
    #: when (``time.monotonic()``) the callee functions holding its calls were last named in a refusal, and how
    held_by: tuple[float, str] | None = None
    #: bytes those calls, and the trigger-fired calls they set off, hold (max_call_bytes_per_worker)
    call_bytes: int = 0
    #: registrations refused over the engine's count limits (iii_engine.limits)
    refused_registrations: int = 0
    #: awaits the loss of this worker's connection, even while its frames are not read (set by the engine's
    #: server; ``None``: not watched)
    wait_closed: Callable[[], Awaitable[None]] | None = None
    session: WorkerSession = field(init=False)
    #: the sorted listing of both function sets and the set versions it was made from
    _listing: tuple[set[str], int, set[str], int, list[str]] | None = field(default=None, init=False, repr=False,
                                                                             compare=False)

    def __post_init__(self) -> None:
        self.session = WorkerSession(self.id)

    @property
    def frames_in(self) -> int:
        """Frames received from this worker."""
        return self.session.frames_in

    @property
    def telemetry_frames(self) -> int:
        """Binary telemetry frames received."""
        return self.session.telemetry_frames

    @property
    def dropped_frames(self) -> int:
        """Frames that could not be decoded (and were dropped, answered when they asked for an answer)."""
        return self.session.dropped_frames

    def post(self, text: str) -> bool:
        """Queue a text frame for this worker."""
        return self.outbox.post(text)

    def function_ids(self) -> list[str]:
        """Ids of every function this worker serves (its own and HTTP-invoked ones), sorted: a new list, from a
        listing sorted once per change of either set."""
        functions, external = self.functions, self.external_functions
        if type(functions) is not FunctionIds or type(external) is not FunctionIds:  # sets assigned by hand
            return sorted(functions | external)
        cached = self._listing
        if cached is None or cached[0] is not functions or cached[1] != functions.version \
                or cached[2] is not external or cached[3] != external.version:
            cached = self._listing = (functions, functions.version, external, external.version,
                                      sorted(functions | external))
        return list(cached[4])  # the caller's to keep or change (an in-process caller gets the result itself)

    def info(self) -> dict[str, Any]:
        """The wire ``WorkerInfo`` (docs/protocol.md#built-in-functions): every key present, ``pid`` only when known."""
        functions = self.function_ids()
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "runtime": self.runtime,
            "version": self.version,
            "os": self.os,
            "ip_address": self.ip_address,
            "status": "connected",
            "connected_at_ms": self.connected_at_ms,
            "function_count": len(functions),
            "functions": functions,
            "active_invocations": len(self.in_flight),
            "latest_metrics": None,
        }
        if self.pid is not None:
            out["pid"] = self.pid
        return out
