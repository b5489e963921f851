"""The relay's I/O: the loops that move one channel's messages between its two ends.

Each attached end runs one coroutine here (the writer loop reads, the reader loop sends, a watcher reads the
reader end for its Close). Every decision is the :class:`~.machine.ChannelMachine`'s; this module only waits,
moves bytes through the :class:`~iii.channel_end.ChannelEnd` contract and carries out the machine's actions.
Sockets and in-process ends look the same from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import iii.ws_imports  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.connection import Connection

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import ChannelEnd, ChannelEndClosed, Message, WebSocketEnd, close_draining
from iii.waiters import Signal
from iii.ws_fastpath import (
    bound_frame_queue,
    frame_queue_high,
    take_on_arrival,
    take_ready,
    wait_ready,
    writable_now,
    write_server_frames,
)

from .limits import DEFAULT_SOCKET_QUEUE, HELD_BACK_SOCKET_BYTES, SOCKET_QUEUE_BYTES, frame_queue_for
from .machine import Action, ChannelMachine, Close, EndState, Side, Step

log = logging.getLogger(__name__)

SEND_BATCH_BYTES = 256 * 1024
"""Payload bytes the relay hands a reader socket in one write at least (one frame may go past it); more, up to the
room left under the socket's write-buffer high mark, when it has that room (:func:`_batch_bytes`). The messages
move from the channel's queue to the socket's write buffer, so the batches add at most this to what the engine
holds past that mark, plus two messages (the last of the callback's batch and of the reader loop's, which writes
before it waits)."""


def _batch_bytes(ws: Connection) -> int:
    """Payload bytes for the next batch written to the reader socket ``ws``: the room left under its write-buffer
    high mark (1 MiB on a relay socket), at least :data:`SEND_BATCH_BYTES`.

    Why: what one read of the writer brings (up to 1 MiB: sixteen 64 KiB frames of the reference SDK's writer)
    then leaves in one write, from the callback that read it. Cut at 256 KiB, the rest woke the reader loop for a
    loop turn and a write per batch: ~11 % of the relay's CPU per GiB with 64 KiB frames (issue 10). The socket's
    buffer holds no more than with a fixed batch (its high mark, plus SEND_BATCH_BYTES, plus two messages; with
    two fixed batches it was twice SEND_BATCH_BYTES): a batch past SEND_BATCH_BYTES is only written into room
    under the mark."""
    transport = ws.transport
    try:
        room = transport.get_write_buffer_limits()[1] - transport.get_write_buffer_size()
    except (AttributeError, NotImplementedError):  # a transport without flow-control marks
        return SEND_BATCH_BYTES
    return room if room > SEND_BATCH_BYTES else SEND_BATCH_BYTES


class LiveChannel:
    """A channel in the registry: its machine plus what only the I/O side has (ends, wake-ups, timer)."""

    __slots__ = ("data", "deadline", "full_waiters", "machine", "owner", "reader_end", "reader_key", "socket_held",
                 "space", "writer_end", "writer_idle", "writer_key")

    def __init__(self, machine: ChannelMachine, writer_key: str, reader_key: str, owner: str | None) -> None:
        self.machine = machine
        self.writer_key = writer_key
        self.reader_key = reader_key
        self.owner = owner
        self.writer_end: ChannelEnd | None = None
        self.reader_end: ChannelEnd | None = None
        self.data = Signal()  # the reader loop: a message arrived or the stream state changed
        self.space = Signal()  # the writer loop: the queue has room or the stream state changed
        self.full_waiters: list[asyncio.Future[None]] = []
        self.deadline: asyncio.TimerHandle | None = None
        # The writer loop waits for its socket with nothing else to do: messages arriving meanwhile may be queued
        # straight from the socket's callback (Driver.take_arrived).
        self.writer_idle = False
        # The writer socket's receive buffer is down to HELD_BACK_SOCKET_BYTES (a held-bytes bound keeps it waiting).
        self.socket_held = False

    @property
    def id(self) -> str:
        """The channel id."""
        return self.machine.id

    def wake(self) -> None:
        """Wake both loops (after a state change they must look at)."""
        self.data.set()
        self.space.set()

    def end(self, side: Side) -> ChannelEnd | None:
        """The attached end of ``side``, if any."""
        return self.writer_end if side is Side.WRITER else self.reader_end

    async def reader_next(self) -> Message | Close | None:
        """The reader end's next step, waiting while there is none: a message (then :meth:`reader_took`, after
        taking any batched with it), the Close that ends the reader, or ``None`` when the reader left or the channel
        was discarded. The one reader loop of the relay's socket ends and of :class:`~.local.LocalReader`."""
        machine = self.machine
        while True:
            item = machine.reader_step()
            if item is not Step.WAIT:
                return None if item is Step.STOP else item
            await self.data.wait()

    def hand_to_reader(self) -> None:
        """Messages were queued: write them (one batch, :func:`_batch_bytes`) to the reader socket now when its loop is
        idle (waiting for data, its socket under its write-buffer mark), else wake that loop; it also sends what
        is left past that batch. Why: a task switch per message cost the relay more CPU than the bytes (issue 10);
        order and bounds are the reader loop's, as it would have sent them."""
        machine = self.machine
        end = self.reader_end
        if (self.data.waiting and type(end) is WebSocketEnd and machine.items and machine.failure is None
                and not machine.expired and not machine.reader_gone and writable_now(end.ws)):
            item = machine.reader_step()  # a message: the queue holds one and nothing ends the reader
            assert type(item) is tuple
            ws = end.ws
            batch = [item, *machine.reader_more(_batch_bytes(ws) - len(item[1]))]
            self.reader_took()
            write_server_frames(ws, batch)
            if not machine.items:
                return
            # More than one batch was queued (one socket read brought more than the socket had room for): the reader
            # loop sends the rest, waiting on its socket's flow control. Left to the next arrival, it waited for good
            # when the writer had nothing more to send yet (a `send -` whose stdin stayed open lost its last reads).
        self.data.set()

    def reader_took(self) -> None:
        """The reader took messages: a writer waiting for room goes on once the queue is half empty (waking it at
        every free slot would cost a task switch per message while the reader is the slower side)."""
        if self.space.waiting and self.machine.half_empty:
            self.space.set()

    def cancel_deadline(self) -> None:
        """Stop the attach deadline timer."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def notify_full(self) -> None:
        """Release :meth:`ChannelRelay.wait_full` callers."""
        waiters, self.full_waiters = self.full_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _size_frame_queue(ws: Connection, message_size: int, current: int) -> int:
    """Size websockets' own frame queue of ``ws`` (used where the fast receive path is off) for messages of
    ``message_size`` bytes; the queue's high mark now."""
    wanted = frame_queue_for(message_size)
    if wanted != current and bound_frame_queue(ws, wanted, wanted // 4):
        return wanted
    return current


def _hold_socket(ch: LiveChannel, end: ChannelEnd, held: bool) -> None:
    """Lower the writer socket's receive buffer while a held-bytes bound keeps its writer waiting (each waiting
    writer held its socket's 4 MiB besides the bound), and raise it again once the writer has room."""
    if ch.socket_held is held or not isinstance(end, WebSocketEnd):
        return
    ch.socket_held = held
    end.set_receive_buffer(HELD_BACK_SOCKET_BYTES if held else SOCKET_QUEUE_BYTES)


async def perform(end: ChannelEnd, action: Action) -> None:
    """Carry out a machine action on ``end``."""
    if isinstance(action, Close):
        await end.aclose(action.code, action.reason)
    else:
        end.abort()


async def _refuse(end: ChannelEnd, refusal: Close) -> None:
    """Close a writer for a message refused (too big, not UTF-8, over quota) while reading and dropping what it
    still sends. Why: it may be streaming; its unread messages fill the socket's receive buffer, the relay stops
    reading it, and its Close reply waited behind them for websockets' close_timeout (10 s), the writer blocked in
    its write and hearing the refusal only then. The reading starts once our Close is out (the close writes it
    before its first wait): the peer's Close held behind the refused message (:func:`iii.ws_fastpath.guard_close`)
    is read only after, so the writer hears the refusal rather than its own close answered with 1000."""
    draining = asyncio.ensure_future(_drop_all(end))
    try:
        await perform(end, refusal)
    finally:
        if not draining.done():
            draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)


async def _drop_all(end: ChannelEnd) -> None:
    """Read and drop messages until ``end`` is closed."""
    with contextlib.suppress(ChannelEndClosed):
        while True:
            await end.receive()


class Driver:
    """Runs the loops of attached ends.

    Args:
        spawn: run a coroutine in the background (tracked by the registry).
        finished: called once both ends of a channel are done.
        ended_early: called once one end is done and the other, not attached yet, can only be told so: with what
            that end gets when it attaches (:meth:`~.machine.ChannelMachine.late_end`).
    """

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None]], None],
                 finished: Callable[[LiveChannel], None],
                 ended_early: Callable[[LiveChannel, Action], None]) -> None:
        self._spawn = spawn
        self._finished = finished
        self._ended_early = ended_early

    def act_later(self, ch: LiveChannel, action: Action | None) -> None:
        """Carry out ``action`` on its end in the background (the end's own loop may be busy waiting)."""
        if action is None:
            return
        end = ch.end(action.side)
        if end is not None:
            self._spawn(perform(end, action))

    @staticmethod
    def attach(ch: LiveChannel, side: Side) -> Close | None:
        """Attach ``side`` of ``ch`` (a socket's end or an in-process one): ``None``, or the Close that refuses a
        second end (4009). The attach deadline stops once both ends are there."""
        refusal = ch.machine.attach(side)
        if refusal is None and side is Side.READER:
            # A writer waiting because held-bytes bounds are reached may go on now, one message at a time (room()).
            ch.space.set()
        if refusal is None and ch.machine.both_attached:
            ch.cancel_deadline()
        return refusal

    def writer_detached(self, ch: LiveChannel) -> None:
        """The writer end is done (its loop ended, or an in-process writer wrote its whole stream)."""
        machine = ch.machine
        machine.writer_done()
        ch.data.set()
        if machine.finished:
            self._finished(ch)
        elif machine.reader_state is EndState.NEW:
            late = machine.late_end()
            if late is not None:
                self._ended_early(ch, late)

    def reader_detached(self, ch: LiveChannel) -> None:
        """The reader end is done (its loop ended, or an in-process reader left): the writer hears of it."""
        machine = ch.machine
        action = machine.reader_done()
        if machine.reader_gone:
            ch.wake()
        self.act_later(ch, action)
        if machine.finished:
            self._finished(ch)
        elif machine.writer_state is EndState.NEW:
            late = machine.late_end()
            if late is not None:
                self._ended_early(ch, late)

    async def serve(self, ch: LiveChannel, end: ChannelEnd, side: Side) -> None:
        """Run an accepted end until it is done (a second connection for the same end is refused with 4009)."""
        refusal = self.attach(ch, side)
        if refusal is not None:
            log.info("channel %s: refusing a second %s connection", ch.id, side.value)
            await perform(end, refusal)
            return
        if side is Side.WRITER:
            await self._serve_writer(ch, end)
        else:
            await self._serve_reader(ch, end)

    # ------------------------------------------------------------------ the writer

    async def _serve_writer(self, ch: LiveChannel, end: ChannelEnd) -> None:
        ch.writer_end = end
        try:
            await self._pump_writer(ch, end)
        finally:
            ch.writer_end = None
            self.writer_detached(ch)

    async def _pump_writer(self, ch: LiveChannel, end: ChannelEnd) -> None:
        if isinstance(end, WebSocketEnd):
            end.guard_close(ch.machine.would_refuse)
            if take_on_arrival(end.ws, lambda unread: self.take_arrived(ch, end, unread)):
                try:
                    await self._pump_fast_writer(ch, end)
                finally:
                    take_on_arrival(end.ws, None)
                return
        await self._pump_slow_writer(ch, end)

    def take_arrived(self, ch: LiveChannel, end: WebSocketEnd, unread: Iterable[Message]) -> bool:
        """Messages arrived on a fast writer socket (called from its transport callback): queue what the writer
        loop would take next, when it is idle and none of ``unread`` will be refused (a refusal needs the loop:
        it closes the writer); whether any was taken. The bounds are the loop's: at most ``capacity`` messages,
        the byte bound passed by at most one message."""
        machine = ch.machine
        if not ch.writer_idle or machine.stopped:
            return False
        room = machine.room()
        if room <= 0:
            if machine.held_back:
                _hold_socket(ch, end, True)  # before the socket reads on into its 4 MiB
            return False
        if machine.would_refuse(unread):
            return False
        batch = end.take_ready(machine.capacity - len(machine.items), room)
        on_message = machine.writer_message
        for text, payload in batch:
            refusal = on_message(text, payload)
            if refusal is not None:  # would_refuse checks what writer_message refuses: only if they ever differ
                ch.writer_idle = False  # nothing more is taken from this writer
                self._spawn(_refuse(end, refusal))
                break
        if machine.full and ch.full_waiters:
            ch.notify_full()
        ch.hand_to_reader()
        return bool(batch)

    async def _pump_fast_writer(self, ch: LiveChannel, end: WebSocketEnd) -> None:
        """The writer loop of a socket on the fast receive path: most messages are queued by :meth:`take_arrived`
        as they arrive; this loop takes what that left (the queue was full, or a message will be refused), waits
        for room, and ends the writer."""
        machine = ch.machine
        ws = end.ws
        on_message = machine.writer_message
        socket_queue = frame_queue_high(ws) or DEFAULT_SOCKET_QUEUE
        while await self._room(ch, end):
            batch = take_ready(ws, machine.capacity - len(machine.items), machine.room())
            if batch:
                for text, payload in batch:
                    refusal = on_message(text, payload)
                    if refusal is not None:
                        await _refuse(end, refusal)
                        return
                ch.hand_to_reader()
                continue
            ch.writer_idle = True
            try:
                ended = await wait_ready(ws)
            finally:
                ch.writer_idle = False
            if not ended:
                continue
            size = await self._receive_one(ch, end)  # the peer's Close, or the public API after a handover
            if size is None:
                return
            # Handed over to websockets (a fragmented message): its own frame queue is sized as on the slow path.
            socket_queue = _size_frame_queue(ws, size, socket_queue)
            ch.hand_to_reader()

    async def _pump_slow_writer(self, ch: LiveChannel, end: ChannelEnd) -> None:
        """The writer loop of any other end (no fast receive path): one message per ``receive``."""
        # Where the fast receive path is off, websockets' own frame queue is sized from the message sizes seen.
        ws = end.ws if isinstance(end, WebSocketEnd) else None
        socket_queue = (frame_queue_high(ws) if ws is not None else None) or DEFAULT_SOCKET_QUEUE
        while await self._room(ch, end):
            size = await self._receive_one(ch, end)
            if size is None:
                return
            if ws is not None:
                socket_queue = _size_frame_queue(ws, size, socket_queue)
            ch.data.set()

    @staticmethod
    async def _receive_one(ch: LiveChannel, end: ChannelEnd) -> int | None:
        """Receive one message from the writer and queue it: its size, or ``None`` once the writer is done (it
        closed, or the message was refused and the writer closed for it)."""
        try:
            text, payload = await end.receive()
        except ChannelEndClosed as exc:
            ch.machine.writer_closed(exc.code, exc.reason)
            return None
        refusal = ch.machine.writer_message(text, payload)
        if refusal is not None:
            await _refuse(end, refusal)
            return None
        return len(payload)

    async def _room(self, ch: LiveChannel, end: ChannelEnd) -> bool:
        """Wait while the queue is full or a held-bytes bound it counts against is reached (not reading the writer
        then is what gives it TCP backpressure); ``False`` once the writer was ended because the reader left or the
        channel expired."""
        machine = ch.machine
        while machine.full and not machine.stopped:
            if ch.full_waiters:
                ch.notify_full()
            if machine.held_back:
                _hold_socket(ch, end, True)
            machine.wait_for_room(ch.space.set)
            await ch.space.wait()
        if ch.socket_held:
            _hold_socket(ch, end, False)
        if machine.stopped:
            await self._stop_writer(ch, end)
            return False
        return True

    async def _stop_writer(self, ch: LiveChannel, end: ChannelEnd) -> None:
        """The reader left or the channel expired while the writer was still attached."""
        action = ch.machine.stop_writer()
        if not isinstance(action, Close):
            await perform(end, action)
            return
        await close_draining(end, perform(end, action))

    # ------------------------------------------------------------------ the reader

    async def _serve_reader(self, ch: LiveChannel, end: ChannelEnd) -> None:
        ch.reader_end = end
        machine = ch.machine
        watcher = asyncio.ensure_future(self._watch_reader(ch, end)) if machine.policy.watch_reader else None
        try:
            await self._pump_reader(ch, end)
        except ChannelEndClosed:
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
            ch.reader_end = None
            self.reader_detached(ch)

    async def _pump_reader(self, ch: LiveChannel, end: ChannelEnd) -> None:
        machine = ch.machine
        next_step = ch.reader_next
        took = ch.reader_took
        send = end.send
        # A socket reader gets what the queue holds (up to _batch_bytes) in one write and one wait.
        batched = end if isinstance(end, WebSocketEnd) else None
        items = machine.items
        while True:
            item = await next_step()
            if type(item) is tuple:
                if batched is not None and items:
                    batch = [item, *machine.reader_more(_batch_bytes(batched.ws) - len(item[1]))]
                    took()
                    await batched.send_batch(batch)  # raises the ChannelEndClosed that ends this loop
                    continue
                took()
                await send(item[1], text=item[0])  # raises the ChannelEndClosed that ends this loop
            elif item is None:
                return
            else:
                assert isinstance(item, Close)
                await perform(end, item)
                return

    async def _watch_reader(self, ch: LiveChannel, end: ChannelEnd) -> None:
        """Read the reader end continuously (pings answered, Close noticed at once,
        docs/protocol.md#channel-improvements C1)."""
        try:
            while True:
                _, payload = await end.receive()
                log.warning("channel %s: ignoring a %d-byte data frame from the reader", ch.id, len(payload))
        except ChannelEndClosed:
            pass
        if not ch.machine.delivered:
            action = ch.machine.reader_left()
            ch.wake()
            self.act_later(ch, action)


__all__ = ["Driver", "LiveChannel", "perform"]
