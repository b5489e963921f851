"""Channel relay (PROTOCOL §5, with every improvement of §9.2).

A channel moves WebSocket messages from one writer socket to one reader socket, in order, through a bounded
queue of at most ``buffer_size`` messages. The worker listener hands ``/ws/channels/{id}`` upgrades here:
:meth:`ChannelRelay.check` runs before the upgrade (HTTP refusal), :meth:`ChannelRelay.serve` runs the accepted
connection until that end is done.

Close codes sent by this relay (ours; the production engine sends Close without a code in every case):

====  ================  =====================================================================
1000  reader            end of stream: the writer closed normally and everything was delivered
1009  writer            a message exceeded ``max_message_size``, or the channel's byte quota ran out
                        (the reader then gets 4001)
4001  reader            the writer aborted (non-normal close code, dropped connection, oversize), or the
                        channel was discarded (:meth:`ChannelRelay.discard`)
4002  writer            the reader closed or disconnected before the end, or the channel was discarded
4003  the attached end  the channel expired: the other end never connected in time
4009  extra connection  that end of the channel is already attached
====  ================  =====================================================================

With ``production_mode=True`` the relay mimics the production engine instead, so clients can be tested against
both: one key for both directions, ``dir`` not checked against the key, Close without a code for EOF, abort,
expiry and extra connections, the reader socket never read, and a writer whose reader left dropped without Close.

Example:
    >>> relay = ChannelRelay()
    >>> refs = relay.create(8, owner="worker-1")
    >>> refs["writer"]["direction"], refs["reader"]["direction"]
    ('write', 'read')
    >>> relay.check(refs["writer"]["channel_id"], refs["reader"]["access_key"], "write")
    (404, 'Channel not found')
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import logging
import secrets
import struct
import uuid
from collections import deque
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger("iii_engine.channels")

DEFAULT_BUFFER_SIZE = 64
MAX_BUFFER_SIZE = 1024
# Per-channel cap on the payload bytes queued between writer and reader (on top of the message count cap).
DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024
# Bytes a writer socket may hold in received-but-unread frames; its frame queue is sized from it per message.
_SOCKET_QUEUE_BYTES = 4 * 1024 * 1024
_DEFAULT_SOCKET_QUEUE = 16
# (high, low) frame queue of a freshly accepted channel socket, before its first message tells the size.
CHANNEL_SOCKET_QUEUE = (1, 0)

CLOSE_EOF = 1000
CLOSE_TOO_BIG = 1009
CLOSE_WRITER_ABORTED = 4001
CLOSE_READER_GONE = 4002
CLOSE_EXPIRED = 4003
CLOSE_ALREADY_ATTACHED = 4009

# Close codes a writer may use to mean "end of stream" (1005 = Close frame without a code).
_WRITER_EOF_CODES = frozenset({1000, 1005})


class _EndState(enum.Enum):
    NEW = "new"
    ATTACHED = "attached"
    DONE = "done"


def clamp_buffer_size(buffer_size: int | None) -> int:
    """The queue capacity for a requested ``buffer_size`` (default 64, clamped to 1…1024, PROTOCOL §5.1).

    Example:
        >>> clamp_buffer_size(None), clamp_buffer_size(0), clamp_buffer_size(5000)
        (64, 1, 1024)
    """
    if buffer_size is None:
        return DEFAULT_BUFFER_SIZE
    return max(1, min(MAX_BUFFER_SIZE, int(buffer_size)))


def _server_frame(message: str | bytes) -> bytes:
    """``message`` as one unmasked server frame (text for ``str``, binary otherwise).

    ``ws.send`` costs a context manager and a frame object per message; the relay's hot loop writes the frame
    itself. The bytes on the wire are the same.

    Example:
        >>> _server_frame(b"ab"), _server_frame("hi")
        (b'\\x82\\x02ab', b'\\x81\\x02hi')
    """
    if isinstance(message, str):
        payload, head = message.encode(), 0x81
    else:
        payload, head = message, 0x82
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", head, size)
    elif size < 65536:
        header = struct.pack("!BBH", head, 126, size)
    else:
        header = struct.pack("!BBQ", head, 127, size)
    return b"".join((header, payload))


def _socket_bytes(ws: ServerConnection | None) -> int:
    """Payload bytes of the frames ``ws`` received but nobody read yet."""
    frames = getattr(getattr(getattr(ws, "recv_messages", None), "frames", None), "queue", None)
    return sum(len(frame.data) for frame in frames) if frames else 0


async def _drain(ws: ServerConnection) -> None:
    """Wait for the socket's write buffer to drain below its limit; a failed socket becomes ``ConnectionClosed``."""
    try:
        await ws.drain()
    except ConnectionClosed:
        raise
    except Exception:
        ws.transport.abort()
        await ws.wait_closed()
        raise ws.protocol.close_exc from None


class _Channel:
    """One channel: the queue, both ends' state and the wake-ups between the two serve loops."""

    def __init__(
        self, channel_id: str, writer_key: str, reader_key: str, capacity: int, owner: str | None,
        max_bytes: int | None = None,
    ) -> None:
        self.id = channel_id
        self.writer_key = writer_key
        self.reader_key = reader_key
        self.capacity = capacity
        self.owner = owner
        self.items: deque[str | bytes] = deque()
        self.queued_bytes = 0
        self.peak_bytes = 0
        self.discarded = False
        self.writer_state = _EndState.NEW
        self.reader_state = _EndState.NEW
        self.writer_ws: ServerConnection | None = None
        self.reader_ws: ServerConnection | None = None
        self.eof = False
        # (close code for the reader, reason) once the stream ended abnormally.
        self.failure: tuple[int, str] | None = None
        self.reader_gone = False
        self.expired = False
        self.deadline: asyncio.TimerHandle | None = None
        # Optional byte quota (§9.2 C8): total payload bytes the writer may send over the channel's lifetime.
        self.max_bytes = max_bytes
        self.bytes_in = 0
        # Deepest the queue ever got; lets tests prove the bound without timing.
        self.peak_items = 0
        self.full_waiters: list[asyncio.Future[None]] = []
        self._data_waiter: asyncio.Future[None] | None = None
        self._space_waiter: asyncio.Future[None] | None = None

    # The two waiters are single futures (one reader loop, one writer loop); cheaper than Events on the hot path.
    def wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_writer(self) -> None:
        waiter = self._space_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_data(self) -> None:
        self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    async def wait_space(self) -> None:
        self._space_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._space_waiter
        finally:
            self._space_waiter = None

    def notify_full(self) -> None:
        waiters, self.full_waiters = self.full_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def reader_must_stop(self) -> bool:
        return self.reader_gone or self.expired


class ChannelRelay:
    """All channels of one engine.

    Args:
        max_message_size: largest message a writer may send; larger closes the writer with 1009 and aborts.
        attach_timeout_s: how long an end may stay unattached before the channel expires (4003).
        max_channel_bytes: default byte quota of a channel (``None``: unlimited); ``create`` may set its own.
        max_queued_bytes: the relay stops reading a writer while this many payload bytes wait for the reader
            (besides ``buffer_size`` messages), so a channel holds at most this plus one message in its queue.
        production_mode: behave like the production engine (see the module docstring).

    Example:
        >>> relay = ChannelRelay(attach_timeout_s=60.0)
        >>> ref = relay.create(None, owner=None)["reader"]
        >>> relay.check(ref["channel_id"], ref["access_key"], "read") is None
        True
    """

    def __init__(
        self,
        *,
        max_message_size: int = 64 * 1024 * 1024,
        attach_timeout_s: float = 300.0,
        max_channel_bytes: int | None = None,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        production_mode: bool = False,
    ) -> None:
        if max_queued_bytes < 1:
            raise ValueError(f"max_queued_bytes must be >= 1, got {max_queued_bytes}")
        if max_channel_bytes is not None and max_channel_bytes < 0:
            raise ValueError(f"max_channel_bytes must be >= 0 or None, got {max_channel_bytes}")
        self.max_message_size = max_message_size
        self.max_queued_bytes = max_queued_bytes
        self.max_channel_bytes = max_channel_bytes
        self.attach_timeout_s = attach_timeout_s
        self.production_mode = production_mode
        self._channels: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ creation and lookup

    def create(self, buffer_size: int | None, owner: str | None, max_bytes: int | None = None) -> dict[str, Any]:
        """``engine::channels::create``: ``{"writer": ref, "reader": ref}`` (PROTOCOL §5.1, §9.2 C6/C7).

        ``max_bytes`` caps the bytes the writer may send over the channel (§9.2 C8; the relay's
        ``max_channel_bytes`` when ``None``); going past it closes the writer with 1009 and aborts the reader.
        """
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        channel_id = str(uuid.uuid4())
        writer_key = secrets.token_urlsafe(24)
        reader_key = writer_key if self.production_mode else secrets.token_urlsafe(24)
        channel = _Channel(
            channel_id,
            writer_key,
            reader_key,
            clamp_buffer_size(buffer_size),
            None if self.production_mode else owner,
            None if self.production_mode else (self.max_channel_bytes if max_bytes is None else max_bytes),
        )
        self._channels[channel_id] = channel
        self._idle.clear()
        self._arm_deadline(channel)
        return {
            "writer": {"channel_id": channel_id, "access_key": writer_key, "direction": "write"},
            "reader": {"channel_id": channel_id, "access_key": reader_key, "direction": "read"},
        }

    def check(self, channel_id: str, key: str | None, direction: str | None) -> tuple[int, str] | None:
        """``(status, body)`` to refuse the upgrade with, or ``None`` to accept it."""
        if key is None or direction not in ("read", "write"):
            return (400, "Invalid channel request: need key and dir=read|write")
        channel = self._channels.get(channel_id)
        if channel is None:
            return (404, "Channel not found")
        expected = channel.writer_key if direction == "write" else channel.reader_key
        if not hmac.compare_digest(key.encode(), expected.encode()):
            return (404, "Channel not found")
        return None

    async def wait_full(self, channel_id: str) -> None:
        """Wait until the channel's queue is full (``buffer_size`` messages, or ``max_queued_bytes`` bytes) and the
        relay has stopped reading its writer (ours; lets tests observe backpressure without polling).

        Raises:
            KeyError: no such channel.
        """
        ch = self._channels[channel_id]
        if len(ch.items) >= ch.capacity or ch.queued_bytes >= self.max_queued_bytes:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch.full_waiters.append(waiter)
        await waiter

    def stats(self, channel_id: str) -> dict[str, int | None]:
        """Counters of a live channel (ours; for tests and monitoring).

        ``queued``/``capacity``/``peak``: messages in the queue, its limit, the most it ever held;
        ``queued_bytes``/``peak_bytes``/``max_queued_bytes``: the same in payload bytes; ``socket_bytes``: bytes
        received from the writer socket but not yet taken by the relay; ``bytes_in``/``max_bytes``: the
        lifetime byte count and quota (``bytes_in`` is only counted under a quota).

        Raises:
            KeyError: no such channel.
        """
        ch = self._channels[channel_id]
        return {"queued": len(ch.items), "capacity": ch.capacity, "peak": ch.peak_items,
                "queued_bytes": ch.queued_bytes, "peak_bytes": ch.peak_bytes,
                "max_queued_bytes": self.max_queued_bytes, "socket_bytes": _socket_bytes(ch.writer_ws),
                "bytes_in": ch.bytes_in, "max_bytes": ch.max_bytes}

    def discard(self, channel_id: str) -> None:
        """Drop a channel now, whatever its state (ours; the REST API module calls it after each request).

        An attached writer is closed with 4002, an attached reader with 4001 (reason "channel discarded"); queued
        messages are dropped and the ids stop resolving. Unknown or already removed ids are ignored.

        Example:
            >>> relay = ChannelRelay()
            >>> channel_id = relay.create(None, owner=None)["reader"]["channel_id"]
            >>> relay.discard(channel_id); relay.discard(channel_id); len(relay)
            0
        """
        ch = self._channels.get(channel_id)
        if ch is None:
            return
        if ch.deadline is not None:
            ch.deadline.cancel()
            ch.deadline = None
        ch.discarded = True
        ch.reader_gone = True
        if ch.failure is None:
            ch.failure = (CLOSE_WRITER_ABORTED, "channel discarded")
        ch.items.clear()
        ch.queued_bytes = 0
        if ch.writer_ws is not None and ch.writer_state is _EndState.ATTACHED:
            self._spawn(self._close(ch.writer_ws, CLOSE_READER_GONE, "channel discarded"))
        if ch.reader_ws is not None and ch.reader_state is _EndState.ATTACHED:
            self._spawn(self._close(ch.reader_ws, CLOSE_WRITER_ABORTED, "channel discarded"))
        ch.wake_reader()
        ch.wake_writer()
        self._forget(channel_id)

    async def wait_idle(self) -> None:
        """Wait until no channel is left (ours; tests await it to check that finished channels are removed)."""
        await self._idle.wait()

    def _forget(self, channel_id: str) -> None:
        self._channels.pop(channel_id, None)
        if not self._channels:
            self._idle.set()

    def __len__(self) -> int:
        """Number of live channels (ours; tests use it to check removal)."""
        return len(self._channels)

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._channels

    # ------------------------------------------------------------------ serving one end

    async def serve(self, ws: ServerConnection, channel_id: str, key: str, direction: str) -> None:
        """Run one accepted channel end until it is done."""
        channel = self._channels.get(channel_id)
        if channel is None or self.check(channel_id, key, direction) is not None:
            # The channel expired or was removed between check() and the upgrade.
            await self._close(ws, CLOSE_EXPIRED, "channel no longer exists")
            return
        state = channel.writer_state if direction == "write" else channel.reader_state
        if state is not _EndState.NEW:
            log.info("channel %s: refusing a second %s connection", channel_id, direction)
            await self._close(ws, CLOSE_ALREADY_ATTACHED, f"channel {direction} end is already attached")
            return
        if direction == "write":
            await self._serve_writer(channel, ws)
        else:
            await self._serve_reader(channel, ws)

    async def _serve_writer(self, ch: _Channel, ws: ServerConnection) -> None:
        ch.writer_state = _EndState.ATTACHED
        ch.writer_ws = ws
        self._check_deadline(ch)
        try:
            await self._pump_writer(ch, ws)
        finally:
            ch.writer_state = _EndState.DONE
            ch.writer_ws = None
            if not ch.eof and ch.failure is None and not ch.reader_gone and not ch.expired:
                ch.failure = (CLOSE_WRITER_ABORTED, "writer ended unexpectedly")
            ch.wake_reader()
            self._maybe_remove(ch)

    async def _pump_writer(self, ch: _Channel, ws: ServerConnection) -> None:
        items = ch.items
        capacity = ch.capacity
        limit = self.max_message_size
        quota = ch.max_bytes
        budget = self.max_queued_bytes
        frames = getattr(ws, "recv_messages", None)
        socket_queue = frames.high if frames is not None else _DEFAULT_SOCKET_QUEUE
        while True:
            # Not reading the writer while the queue is full is what gives it TCP backpressure.
            while (len(items) >= capacity or ch.queued_bytes >= budget) and not (ch.reader_gone or ch.expired):
                if ch.full_waiters:
                    ch.notify_full()
                await ch.wait_space()
            if ch.reader_gone or ch.expired:
                await self._stop_writer(ch, ws)
                return
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                if ch.reader_gone or ch.expired:
                    return
                code = exc.rcvd.code if exc.rcvd is not None else None
                if self.production_mode or code in _WRITER_EOF_CODES:
                    ch.eof = True
                else:
                    reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else ""
                    what = f"writer closed with code {code}" if code is not None else "writer connection dropped"
                    ch.failure = (CLOSE_WRITER_ABORTED, f"{what}: {reason}" if reason else what)
                return
            if len(message) > limit:
                ch.failure = (CLOSE_WRITER_ABORTED, f"writer sent a message of {len(message)} bytes (max {limit})")
                if self.production_mode:
                    ch.failure = None
                    ch.eof = True
                await ws.close(CLOSE_TOO_BIG, f"message exceeds {limit} bytes")
                return
            if quota is not None:
                ch.bytes_in += len(message)
                if ch.bytes_in > quota:
                    why = f"channel byte quota of {quota} exceeded"
                    ch.failure = (CLOSE_WRITER_ABORTED, f"writer aborted: {why}")
                    await ws.close(CLOSE_TOO_BIG, why)
                    return
            size = len(message)
            if frames is not None:
                # websockets queues up to ``high + 1`` frames before it stops reading the socket; size that queue
                # from the last message so large messages cannot pile up there (small ones keep the default).
                wanted = max(0, min(_DEFAULT_SOCKET_QUEUE, _SOCKET_QUEUE_BYTES // (size or 1) - 1))
                if wanted != socket_queue:
                    socket_queue = frames.high = wanted
                    frames.low = wanted // 4
            if ch.reader_gone or ch.expired:
                continue
            items.append(message)
            ch.queued_bytes += size
            if ch.queued_bytes > ch.peak_bytes:
                ch.peak_bytes = ch.queued_bytes
            if len(items) > ch.peak_items:
                ch.peak_items = len(items)
            ch.wake_reader()

    async def _stop_writer(self, ch: _Channel, ws: ServerConnection) -> None:
        """The reader left or the channel expired while the writer was still attached."""
        if self.production_mode:
            # Production drops the writer connection without a Close frame.
            ws.transport.abort()
            return
        if ch.expired:
            code, reason = CLOSE_EXPIRED, "channel expired"
        else:
            code, reason = CLOSE_READER_GONE, "channel discarded" if ch.discarded else "reader gone"
        closing = asyncio.ensure_future(self._close(ws, code, reason))
        # Keep reading (and discarding) so the writer's Close reply is not stuck behind unread data frames.
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
        await closing

    async def _serve_reader(self, ch: _Channel, ws: ServerConnection) -> None:
        ch.reader_state = _EndState.ATTACHED
        ch.reader_ws = ws
        self._check_deadline(ch)
        watcher = None if self.production_mode else asyncio.ensure_future(self._watch_reader(ch, ws))
        try:
            await self._pump_reader(ch, ws)
        except ConnectionClosed:
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
            ch.reader_state = _EndState.DONE
            ch.reader_ws = None
            if not (ch.eof and not ch.items) and ch.failure is None:
                self._reader_left(ch)
            self._maybe_remove(ch)

    async def _pump_reader(self, ch: _Channel, ws: ServerConnection) -> None:
        items = ch.items
        while True:
            if ch.failure is not None and not self.production_mode:
                code, reason = ch.failure
                items.clear()
                ch.queued_bytes = 0
                await self._close(ws, code, reason)
                return
            if ch.expired:
                await self._close(ws, CLOSE_EXPIRED, "channel expired: the writer never connected")
                return
            if ch.reader_gone:
                return
            if items:
                message = items.popleft()
                ch.queued_bytes -= len(message)
                ch.wake_writer()
                protocol = ws.protocol
                if protocol.state is State.OPEN and not protocol.extensions:
                    ws.transport.write(_server_frame(message))
                    await _drain(ws)
                else:
                    await ws.send(message)  # raises the ConnectionClosed that ends this loop
                continue
            if ch.eof or ch.failure is not None:
                await self._close(ws, CLOSE_EOF, "")
                return
            await ch.wait_data()

    async def _watch_reader(self, ch: _Channel, ws: ServerConnection) -> None:
        """Read the reader socket continuously (pings answered, Close noticed at once, §9.2 C1)."""
        try:
            async for message in ws:
                log.warning("channel %s: ignoring a %d-byte data frame from the reader", ch.id, len(message))
        except ConnectionClosed:
            pass
        if not (ch.eof and not ch.items):
            self._reader_left(ch)

    def _reader_left(self, ch: _Channel) -> None:
        if ch.reader_gone:
            return
        ch.reader_gone = True
        ch.items.clear()
        ch.queued_bytes = 0
        ch.wake_reader()
        ch.wake_writer()
        writer = ch.writer_ws
        if writer is not None and not self.production_mode and ch.writer_state is _EndState.ATTACHED:
            # The writer may be idle in recv(): close it now instead of on its next message.
            self._spawn(self._close(writer, CLOSE_READER_GONE, "reader gone"))

    # ------------------------------------------------------------------ lifetime

    def _arm_deadline(self, ch: _Channel) -> None:
        if self.attach_timeout_s <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # created outside a loop (doctest, sync setup): no deadline
            return
        ch.deadline = loop.call_later(self.attach_timeout_s, self._expire, ch)

    def _check_deadline(self, ch: _Channel) -> None:
        if ch.writer_state is not _EndState.NEW and ch.reader_state is not _EndState.NEW and ch.deadline:
            ch.deadline.cancel()
            ch.deadline = None

    def _expire(self, ch: _Channel) -> None:
        ch.deadline = None
        if ch.writer_state is not _EndState.NEW and ch.reader_state is not _EndState.NEW:
            return
        log.info("channel %s expired (writer %s, reader %s)", ch.id, ch.writer_state.value, ch.reader_state.value)
        ch.expired = True
        ch.wake_reader()
        ch.wake_writer()
        writer = ch.writer_ws
        if writer is not None and not self.production_mode:
            self._spawn(self._close(writer, CLOSE_EXPIRED, "channel expired: the reader never connected"))
        self._forget(ch.id)

    def _maybe_remove(self, ch: _Channel) -> None:
        done = _EndState.DONE
        if ch.writer_state is done and ch.reader_state is done:
            if ch.deadline is not None:
                ch.deadline.cancel()
                ch.deadline = None
            self._forget(ch.id)

    def drop_owner(self, worker_id: str) -> None:
        """The worker that created channels disconnected: remove its channels that have no attached end."""
        for ch in list(self._channels.values()):
            if ch.owner == worker_id and ch.writer_state is _EndState.NEW and ch.reader_state is _EndState.NEW:
                if ch.deadline is not None:
                    ch.deadline.cancel()
                self._forget(ch.id)

    async def close(self) -> None:
        """Engine shutdown: close every channel socket and forget every channel."""
        closing = []
        for ch in list(self._channels.values()):
            if ch.deadline is not None:
                ch.deadline.cancel()
            ch.expired = True
            for ws in (ch.writer_ws, ch.reader_ws):
                if ws is not None:
                    closing.append(self._close(ws, 1001, "engine shutting down"))
            ch.wake_reader()
            ch.wake_writer()
        self._channels.clear()
        self._idle.set()
        await asyncio.gather(*closing, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ helpers

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        if ws.protocol.state is not State.OPEN:
            return
        if self.production_mode:
            # Production sends a Close frame without a status code in every case.
            with contextlib.suppress(ConnectionClosed, Exception):
                async with ws.send_context():
                    ws.protocol.send_close()
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.close(code, reason[:120])

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
