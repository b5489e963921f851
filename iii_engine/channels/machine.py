"""The relay's state machine for one channel, without I/O (in the manner of ``h11``).

:class:`ChannelMachine` holds a channel's queue and the state of its two ends, takes events — an end attached, a
message from the writer, the writer closed, the reader left, the deadline passed, the channel discarded — and
answers with what to do: an :class:`Close` or :class:`Drop` for one end, the next message for the reader, or
"wait". The socket driver (:mod:`.driver`) runs the loops and the timers and carries the actions out; the tests
in ``tests/unit/channels/test_machine.py`` drive the machine with no sockets at all.

Example:
    >>> machine = ChannelMachine("c1", capacity=2)
    >>> machine.attach(Side.WRITER), machine.attach(Side.READER)
    (None, None)
    >>> machine.writer_message(False, b"chunk")
    >>> machine.reader_step()
    (False, b'chunk')
    >>> machine.writer_closed(1000, "")
    >>> machine.reader_step()
    Close(side=<Side.READER: 'read'>, code=<ChannelCloseCode.NORMAL: 1000>, reason='')
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import ChannelCloseCode, Message

from .limits import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_QUEUED_BYTES
from .policy import OURS, RelayPolicy


class Side(enum.Enum):
    """The two ends of a channel (values are the ``dir`` query parameter)."""

    WRITER = "write"
    READER = "read"


class EndState(enum.Enum):
    """An end is attached at most once: NEW → ATTACHED → DONE."""

    NEW = "new"
    ATTACHED = "attached"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``side`` with ``code`` (``None``: a Close frame without a code) and ``reason``."""

    side: Side
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop ``side``'s connection without a Close frame."""

    side: Side


Action = Close | Drop


class Step(enum.Enum):
    """What the reader loop does when there is no message to send."""

    WAIT = "wait"  # nothing to do until the writer side changes something
    STOP = "stop"  # the reader left: end the loop without a Close


class HeldBytes:
    """The payload bytes the queues of a set of channels hold, against one bound: the relay's (every channel) or one
    worker's share (the channels it created). Queues count in and out as messages are queued and taken; a writer
    loop that finds the bound reached waits (:meth:`wait`) until the set is back under ``resume`` (7/8 of the bound:
    waking every waiting writer at each freed byte would cost a task switch each per message).

    Example:
        >>> held = HeldBytes(800)
        >>> woken = []
        >>> held.take(900); held.wait(lambda: woken.append(1))
        >>> held.give(100); woken, held.held
        ([], 800)
        >>> held.give(100); woken, held.held, held.peak
        ([1], 700, 900)
    """

    __slots__ = ("held", "limit", "peak", "resume", "waiting")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a bound on held bytes must be >= 1, got {limit}")
        self.limit = limit
        self.resume = limit - limit // 8
        self.held = 0
        self.peak = 0  # the most it ever held: lets tests prove the bound without timing
        self.waiting: set[Callable[[], None]] = set()

    @property
    def reached(self) -> bool:
        """The bound is reached: writers of these channels are not read, except as :meth:`ChannelMachine.room`
        lets through."""
        return self.held >= self.limit

    def take(self, size: int) -> None:
        """``size`` bytes were queued."""
        held = self.held = self.held + size
        if held > self.peak:
            self.peak = held

    def give(self, size: int) -> None:
        """``size`` bytes left a queue (taken by a reader, or dropped)."""
        held = self.held = self.held - size
        if self.waiting and held <= self.resume:
            waiting, self.waiting = self.waiting, set()
            for wake in waiting:
                wake()

    def wait(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, when the bytes held are back under ``resume``."""
        self.waiting.add(wake)


class ChannelMachine:
    """One channel's queue and end states; see the module docstring.

    Args:
        channel_id: for messages and logs.
        capacity: messages the queue holds before the writer is not read any more.
        max_queued_bytes: payload bytes the queue holds before the writer is not read any more.
        max_message_size: larger messages close the writer with 1009.
        max_bytes: the channel's byte quota over its lifetime (``None``: none; ignored when the policy has no
            quotas).
        policy: ours or the production engine's behaviour.
        held: the :class:`HeldBytes` bounds the queue counts against besides its own (the relay's, its creator's
            share): past one, the writer is not read, except one message at a time into the empty queue of a
            channel whose reader is attached (see :meth:`room`).
    """

    def __init__(
        self,
        channel_id: str,
        *,
        capacity: int,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_bytes: int | None = None,
        policy: RelayPolicy = OURS,
        held: tuple[HeldBytes, ...] = (),
    ) -> None:
        self.id = channel_id
        self.held = held
        self.capacity = capacity
        self.max_queued_bytes = max_queued_bytes
        self.max_message_size = max_message_size
        self.max_bytes = max_bytes if policy.quotas else None
        self.policy = policy
        self.items: deque[Message] = deque()
        self.queued_bytes = 0
        self.bytes_in = 0  # counted under a quota only
        self.peak_items = 0  # deepest the queue ever got: lets tests prove the bound without timing
        self.peak_bytes = 0
        self.writer_state = EndState.NEW
        self.reader_state = EndState.NEW
        self.eof = False
        self.failure: tuple[int, str] | None = None  # (close code for the reader, reason) once it failed
        self.reader_gone = False
        self.expired = False
        self.discarded = False
        self.shutting_down = False  # the engine stops: both ends get 1001, whatever else happened

    # ------------------------------------------------------------------ queries

    @property
    def stopped(self) -> bool:
        """The writer must stop: the reader left, the channel expired or was discarded."""
        return self.reader_gone or self.expired

    @property
    def full(self) -> bool:
        """The writer must not be read now: the queue holds ``capacity`` messages or ``max_queued_bytes`` bytes, or
        a :class:`HeldBytes` bound it counts against is reached (see :meth:`room`)."""
        if len(self.items) >= self.capacity or self.queued_bytes >= self.max_queued_bytes:
            return True
        for bound in self.held:
            if bound.held >= bound.limit:
                return bool(self.items) or self.reader_state is not EndState.ATTACHED
        return False

    def room(self) -> int:
        """Payload bytes the queue may take now (0: none; the message that crosses it is taken whole): what is left
        of ``max_queued_bytes`` and of every held-bytes bound, in messages under ``capacity``. Past a held-bytes
        bound, a channel whose reader is attached still takes one message while its queue is empty, so a transfer
        whose reader reads moves (one message at a time) however many bytes other channels hold; a channel with
        no reader (written ahead, or parked by a writer that finished) waits for room.

        Example:
            >>> held = HeldBytes(100)
            >>> m = ChannelMachine("c", capacity=8, held=(held,))
            >>> m.room(), m.writer_message(False, b"x" * 100), m.room()
            (100, None, 0)
            >>> _ = m.attach(Side.READER); m.room()  # its queue is not empty: no room yet
            0
            >>> m.reader_step() == (False, b"x" * 100), held.held, m.room()
            (True, 0, 100)
        """
        if len(self.items) >= self.capacity:
            return 0
        room = self.max_queued_bytes - self.queued_bytes
        for bound in self.held:
            left = bound.limit - bound.held
            if left < room:
                room = left
        if room <= 0 and not self.items and self.reader_state is EndState.ATTACHED:
            return 1
        return room

    @property
    def held_back(self) -> bool:
        """A held-bytes bound it counts against is reached (whether or not :meth:`room` lets a message through)."""
        return any(bound.held >= bound.limit for bound in self.held)

    def wait_for_room(self, wake: Callable[[], None]) -> None:
        """The writer waits for room: have ``wake`` called once a held-bytes bound it waits on has room again (the
        reader taking from this queue, or attaching, is the driver's to tell)."""
        for bound in self.held:
            if bound.reached:
                bound.wait(wake)

    @property
    def half_empty(self) -> bool:
        """The queue is at most half full: a writer waiting for room may go on (waking it at every free slot
        would cost a task switch per message while the reader is the slower side)."""
        return len(self.items) <= self.capacity // 2 and self.queued_bytes <= self.max_queued_bytes // 2

    @property
    def unattached(self) -> bool:
        """Neither end attached yet."""
        return self.writer_state is EndState.NEW and self.reader_state is EndState.NEW

    @property
    def both_attached(self) -> bool:
        """Both ends attached at some point (the attach deadline no longer applies)."""
        return self.writer_state is not EndState.NEW and self.reader_state is not EndState.NEW

    @property
    def finished(self) -> bool:
        """Both ends are done: the channel can be forgotten."""
        return self.writer_state is EndState.DONE and self.reader_state is EndState.DONE

    @property
    def delivered(self) -> bool:
        """End of stream arrived and every message went out to the reader."""
        return self.eof and not self.items

    def _close(self, side: Side, code: int, reason: str) -> Close:
        return Close(side, self.policy.wire_code(code), reason)

    # ------------------------------------------------------------------ attaching

    def attach(self, side: Side) -> Close | None:
        """An end connected: ``None`` to serve it, or the Close that refuses a second connection (4009)."""
        if side is Side.WRITER:
            if self.writer_state is not EndState.NEW:
                return self._close(side, ChannelCloseCode.IN_USE, "channel write end is already attached")
            self.writer_state = EndState.ATTACHED
        else:
            if self.reader_state is not EndState.NEW:
                return self._close(side, ChannelCloseCode.IN_USE, "channel read end is already attached")
            self.reader_state = EndState.ATTACHED
        return None

    # ------------------------------------------------------------------ the writer

    def stop_writer(self) -> Action:
        """How to end an attached writer once :attr:`stopped` (the reader left or the channel expired)."""
        if self.shutting_down:  # the listener closes every socket at the stop anyway: the same code
            return self._close(Side.WRITER, ChannelCloseCode.GOING_AWAY, "engine shutting down")
        if not self.policy.tell_writer:
            return Drop(Side.WRITER)  # production drops the writer without a Close frame
        if self.expired:
            return self._close(Side.WRITER, ChannelCloseCode.EXPIRED, "channel expired")
        return self._close(Side.WRITER, ChannelCloseCode.READER_GONE,
                           "channel discarded" if self.discarded else "reader gone")

    def writer_message(self, text: bool, data: bytes) -> Close | None:
        """A message from the writer: queued (``None``), or the Close that ends the writer (too big, invalid
        UTF-8, over quota)."""
        size = len(data)
        if size > self.max_message_size:
            limit = self.max_message_size
            return self._writer_fault(ChannelCloseCode.TOO_BIG, f"message exceeds {limit} bytes",
                                      f"writer sent a message of {size} bytes (max {limit})")
        if text:
            try:
                data.decode()
            except UnicodeDecodeError:
                return self._writer_fault(ChannelCloseCode.INVALID_DATA, "invalid UTF-8",
                                          "writer sent a text message that is not UTF-8")
        quota = self.max_bytes
        if quota is not None:
            self.bytes_in += size
            if self.bytes_in > quota:
                why = f"channel byte quota of {quota} exceeded"
                self._abort_stream(f"writer aborted: {why}")
                return Close(Side.WRITER, ChannelCloseCode.TOO_BIG, why)
        if self.reader_gone or self.expired:
            return None  # dropped: the writer is being stopped
        items = self.items
        items.append((text, data))
        self.queued_bytes += size
        for bound in self.held:  # HeldBytes.take, inline: this runs for every message
            held = bound.held = bound.held + size
            if held > bound.peak:
                bound.peak = held
        if self.queued_bytes > self.peak_bytes:
            self.peak_bytes = self.queued_bytes
        if len(items) > self.peak_items:
            self.peak_items = len(items)
        return None

    def would_refuse(self, messages: Iterable[Message]) -> bool:
        """Whether :meth:`writer_message` will refuse one of ``messages`` (received, not handed to it yet): too big,
        a text that is not UTF-8, or over the byte quota. The relay then lets the writer's Close wait behind them,
        so that the writer hears the refusal rather than a normal close."""
        quota = self.max_bytes
        total = self.bytes_in
        for text, data in messages:
            if len(data) > self.max_message_size:
                return True
            if text:
                try:
                    data.decode()
                except UnicodeDecodeError:
                    return True
            if quota is not None:
                total += len(data)
                if total > quota:
                    return True
        return False

    def _writer_fault(self, code: int, close_reason: str, failure: str) -> Close:
        if self.policy.writer_abort_visible:
            self._abort_stream(failure)
        else:
            self.eof = True
        # Sent with its code in both behaviours: the writer needs to know why.
        return Close(Side.WRITER, code, close_reason)

    def writer_closed(self, code: int | None, reason: str) -> None:
        """The writer's connection ended: with ``code`` (``None``: dropped without a Close frame)."""
        if self.stopped:
            return
        if self.policy.writer_close_is_eof(code):
            self.eof = True
            return
        what = f"writer closed with code {code}" if code is not None else "writer connection dropped"
        self._abort_stream(f"{what}: {reason}" if reason else what)

    def writer_done(self) -> None:
        """The writer's loop ended, for whatever reason."""
        self.writer_state = EndState.DONE
        if not self.eof and self.failure is None and not self.stopped:
            self._abort_stream("writer ended unexpectedly")

    def _abort_stream(self, reason: str) -> None:
        """The stream failed (the writer aborted, dropped, sent a refused message or ran out of quota): the reader
        gets 4001 with ``reason``. Where it is told so (the policy's ``writer_abort_visible``), it never gets the
        queued messages, so they go now rather than on its first look, which may be at the attach deadline (300 s)
        or never; elsewhere they are delivered, then a normal end."""
        self.failure = (ChannelCloseCode.WRITER_ABORTED, reason)
        if self.policy.writer_abort_visible:
            self.drop_queue()

    def drop_queue(self) -> None:
        """Drop every queued message (none will reach the reader), giving their bytes back to the held-bytes
        bounds. The registry calls it when it forgets a channel, whatever queue the channel had left."""
        self.items.clear()
        size, self.queued_bytes = self.queued_bytes, 0
        if size:
            for bound in self.held:
                bound.give(size)

    # ------------------------------------------------------------------ the reader

    def reader_step(self) -> Message | Close | Step:
        """What the reader loop does next: send a message, close the reader (the end), stop, or wait."""
        if self.shutting_down:
            if self.reader_gone:
                return Step.STOP
            self.drop_queue()
            return self._close(Side.READER, ChannelCloseCode.GOING_AWAY, "engine shutting down")
        if self.failure is not None and self.policy.writer_abort_visible:
            code, reason = self.failure
            self.drop_queue()
            return self._close(Side.READER, code, reason)
        if self.expired:
            return self._close(Side.READER, ChannelCloseCode.EXPIRED, "channel expired: the writer never connected")
        if self.reader_gone:
            return Step.STOP
        items = self.items
        if items:
            message = items.popleft()
            size = len(message[1])
            self.queued_bytes -= size
            for bound in self.held:  # HeldBytes.give, inline but for the wake-up: this runs for every message
                held = bound.held = bound.held - size
                if bound.waiting and held <= bound.resume:
                    bound.give(0)
            return message
        if self.eof or self.failure is not None:
            return self._close(Side.READER, ChannelCloseCode.NORMAL, "")
        return Step.WAIT

    def reader_more(self, max_bytes: int) -> list[Message]:
        """Further queued messages for the reader, right after :meth:`reader_step` gave one: taken while fewer than
        ``max_bytes`` payload bytes are taken (the last may go past it), and only where :meth:`reader_step` would
        hand them out one by one (never past a failure, expiry or a reader that left). Lets the relay write
        several frames with one write and one flow-control wait.

        Example:
            >>> m = ChannelMachine("c", capacity=8)
            >>> for data in (b"a", b"bb", b"ccc"):
            ...     _ = m.writer_message(False, data)
            >>> m.reader_step(), m.reader_more(2), m.reader_more(10), m.queued_bytes
            ((False, b'a'), [(False, b'bb')], [(False, b'ccc')], 0)
        """
        if (self.failure is not None and self.policy.writer_abort_visible) or self.expired or self.reader_gone:
            return []
        items = self.items
        taken: list[Message] = []
        size = 0
        while items and size < max_bytes:
            message = items.popleft()
            size += len(message[1])
            taken.append(message)
        self.queued_bytes -= size
        if size:
            for bound in self.held:
                bound.give(size)
        return taken

    def reader_done(self) -> Action | None:
        """The reader's loop ended; when that was before the end of the stream, what to do with the writer."""
        self.reader_state = EndState.DONE
        if not self.delivered and self.failure is None:
            return self.reader_left()
        return None

    def reader_left(self) -> Action | None:
        """The reader closed or disconnected before the end: drop the queue; maybe close the writer (4002)."""
        if self.reader_gone:
            return None
        self.reader_gone = True
        self.drop_queue()
        if self.writer_state is EndState.ATTACHED and self.policy.tell_writer:
            # The writer may be idle in receive(): close it now instead of on its next message.
            return self._close(Side.WRITER, ChannelCloseCode.READER_GONE, "reader gone")
        return None

    # ------------------------------------------------------------------ lifetime

    def late_end(self) -> Action | None:
        """What the end not attached yet will get whenever it attaches, once the other end is done and nothing can
        reach it any more: the reader of a writer that failed before any reader came (4001 and the writer's
        reason), the writer of a reader that left before any writer came (4002); ``None`` while the channel may
        still carry something (a stream ended normally waits for its reader with its bytes).

        Example:
            >>> m = ChannelMachine("c", capacity=4)
            >>> _ = m.attach(Side.WRITER); _ = m.writer_message(False, b"half")
            >>> m.writer_closed(4400, "wrong function"); m.writer_done()
            >>> late = m.late_end()
            >>> m.queued_bytes, late.side.value, int(late.code), late.reason
            (0, 'read', 4001, 'writer closed with code 4400: wrong function')
        """
        if self.shutting_down or self.expired or self.discarded:
            return None
        if self.writer_state is EndState.DONE and self.reader_state is EndState.NEW:
            if self.failure is not None and self.policy.writer_abort_visible:
                return self._close(Side.READER, *self.failure)
        elif self.reader_state is EndState.DONE and self.writer_state is EndState.NEW and self.reader_gone:
            return self.stop_writer()
        return None

    def expire(self) -> tuple[bool, Action | None]:
        """The attach deadline passed: ``(expired, action for an attached writer)``."""
        if self.both_attached or self.shutting_down:
            return False, None
        self.expired = True
        self.drop_queue()  # no reader gets it: reader_step answers 4003 from now on
        if self.writer_state is EndState.ATTACHED and self.policy.tell_writer:
            return True, self._close(Side.WRITER, ChannelCloseCode.EXPIRED,
                                     "channel expired: the reader never connected")
        return True, None

    def discard(self) -> list[Action]:
        """Drop the channel now: an attached writer gets 4002, an attached reader 4001."""
        self.discarded = True
        self.reader_gone = True
        if self.failure is None:
            self.failure = (ChannelCloseCode.WRITER_ABORTED, "channel discarded")
        self.drop_queue()
        actions: list[Action] = []
        if self.writer_state is EndState.ATTACHED:
            actions.append(self._close(Side.WRITER, ChannelCloseCode.READER_GONE, "channel discarded"))
        if self.reader_state is EndState.ATTACHED:
            actions.append(self._close(Side.READER, ChannelCloseCode.WRITER_ABORTED, "channel discarded"))
        return actions

    def shutdown(self) -> list[Action]:
        """The engine stops: close every attached end with 1001 (an end attached later, or whose loop looks next,
        gets the same); the queue is dropped and the attach deadline no longer applies.

        Example:
            >>> m = ChannelMachine("c", capacity=1)
            >>> _ = m.attach(Side.WRITER); _ = m.writer_message(False, b"x")
            >>> [(a.side.value, int(a.code or 0), a.reason) for a in m.shutdown()]
            [('write', 1001, 'engine shutting down')]
            >>> m.stopped, m.stop_writer().code == 1001, m.reader_step().code == 1001, m.queued_bytes
            (True, True, True, 0)
        """
        self.shutting_down = True
        self.expired = True
        self.drop_queue()  # no reader gets it: reader_step answers 1001 from now on
        return [self._close(side, ChannelCloseCode.GOING_AWAY, "engine shutting down")
                for side, state in ((Side.WRITER, self.writer_state), (Side.READER, self.reader_state))
                if state is EndState.ATTACHED]


__all__ = ["Action", "ChannelMachine", "Close", "Drop", "EndState", "HeldBytes", "Side", "Step"]
