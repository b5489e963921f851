"""Channel relay (PROTOCOL §5, with every improvement of §9.2).

A channel moves WebSocket messages from one writer socket to one reader socket, in order, through a bounded
queue of at most ``buffer_size`` messages. The worker listener hands ``/ws/channels/{id}`` upgrades here:
:meth:`ChannelRelay.check` runs before the upgrade (HTTP refusal), :meth:`ChannelRelay.serve` runs the accepted
connection until that end is done. Engine-internal users (the REST API module) attach in-process instead with
:meth:`ChannelRelay.open_local`: the same loops run on a tiny "end" interface that both a socket end and a local
end implement, so queue, backpressure, close codes and cleanup are identical; only the handshake is skipped.

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
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import OK_CLOSE_CODES, Close
from websockets.protocol import State

from iii.channels import drain_or_close

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


class ChannelRefused(Exception):
    """:meth:`ChannelRelay.open_local` refused the end, with the HTTP status a socket upgrade would have got.

    Example:
        >>> str(ChannelRefused(404, "Channel not found"))
        'channel refused (404): Channel not found'
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"channel refused ({status}): {message}")
        self.status = status
        self.message = message


def _closed(rcvd: Close | None, sent: Close | None) -> ConnectionClosed:
    """The exception websockets would raise for this pair of Close frames (``sent=None``: the peer's echo)."""
    ok = rcvd is not None and rcvd.code in OK_CLOSE_CODES and (sent is None or sent.code in OK_CLOSE_CODES)
    return (ConnectionClosedOK if ok else ConnectionClosedError)(rcvd, sent)


class _SocketEnd:
    """A channel end attached over a WebSocket: what the relay loops need from a connection."""

    __slots__ = ("frames", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        # websockets' incoming frame queue, resized by the writer loop (None if this websockets has none).
        self.frames: Any = getattr(ws, "recv_messages", None)

    @property
    def is_open(self) -> bool:
        return self.ws.protocol.state is State.OPEN

    async def recv(self) -> str | bytes:
        return await self.ws.recv()

    async def send(self, message: str | bytes) -> None:
        ws = self.ws
        protocol = ws.protocol
        if protocol.state is State.OPEN and not protocol.extensions:
            ws.transport.write(_server_frame(message))
            await drain_or_close(ws)
        else:
            await ws.send(message)  # raises the ConnectionClosed that ends the reader loop

    async def close(self, code: int, reason: str, bare: bool) -> None:
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return
        if bare:
            with contextlib.suppress(ConnectionClosed, Exception):
                async with ws.send_context():
                    ws.protocol.send_close()
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.close(code, reason[:120])

    def abort(self) -> None:
        self.ws.transport.abort()

    def pending_bytes(self) -> int:
        return _socket_bytes(self.ws)


class _Pipe:
    """The messages and close state shared by a :class:`LocalChannelEnd` and the relay's view of it.

    At most one message waits in ``items``: the producer's ``put`` returns only once the consumer has room, which
    is the in-process equivalent of a socket that stops being read.
    """

    __slots__ = ("_item_waiter", "_space_waiter", "done", "items", "relay_exc", "size", "user_exc")

    def __init__(self) -> None:
        self.items: deque[str | bytes] = deque()
        self.size = 0
        # What each side raises once the end is closed (None while open).
        self.user_exc: ConnectionClosed | None = None
        self.relay_exc: ConnectionClosed | None = None
        self.done = asyncio.Event()
        self._item_waiter: asyncio.Future[None] | None = None
        self._space_waiter: asyncio.Future[None] | None = None

    @property
    def is_open(self) -> bool:
        return self.user_exc is None

    def shut(self, user_exc: ConnectionClosed, relay_exc: ConnectionClosed) -> None:
        if self.user_exc is not None:
            return
        self.user_exc, self.relay_exc = user_exc, relay_exc
        self.done.set()
        self._wake_items()
        self._wake_space()

    async def put(self, message: str | bytes, by_relay: bool) -> None:
        while self.items and self.user_exc is None:
            self._space_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._space_waiter
            finally:
                self._space_waiter = None
        if self.user_exc is not None:
            raise self.relay_exc if by_relay and self.relay_exc is not None else self.user_exc
        self.items.append(message)
        self.size += len(message)
        self._wake_items()

    async def get(self) -> str | bytes:
        while not self.items:
            if self.user_exc is not None:
                raise ConnectionError  # replaced by the caller with its side's exception
            self._item_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._item_waiter
            finally:
                self._item_waiter = None
        message = self.items.popleft()
        self.size -= len(message)
        self._wake_space()
        return message

    def _wake_items(self) -> None:
        waiter = self._item_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_space(self) -> None:
        waiter = self._space_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _LocalEnd:
    """The relay's side of a :class:`LocalChannelEnd`; same methods as :class:`_SocketEnd`."""

    __slots__ = ("pipe", "writes")
    frames: Any = None

    def __init__(self, pipe: _Pipe, writes: bool) -> None:
        self.pipe = pipe
        self.writes = writes  # True: the local side writes into the channel and the relay receives

    @property
    def is_open(self) -> bool:
        return self.pipe.is_open

    async def recv(self) -> str | bytes:
        pipe = self.pipe
        if not self.writes:
            # A local reader never sends; this only waits for it to leave (the watcher's job).
            await pipe.done.wait()
            assert pipe.relay_exc is not None
            raise pipe.relay_exc
        try:
            return await pipe.get()
        except ConnectionError:
            assert pipe.relay_exc is not None
            raise pipe.relay_exc from None

    async def send(self, message: str | bytes) -> None:
        await self.pipe.put(message, True)

    async def close(self, code: int, reason: str, bare: bool) -> None:
        frame = Close(1005, "") if bare else Close(code, reason[:120])
        self.pipe.shut(_closed(frame, None), _closed(None, frame))

    def abort(self) -> None:
        self.pipe.shut(_closed(None, None), _closed(None, None))

    def pending_bytes(self) -> int:
        return self.pipe.size if self.writes else 0



class LocalChannelEnd:
    """An engine-internal channel end from :meth:`ChannelRelay.open_local`: no socket, same relay rules.

    It offers the part of a websockets connection that engine modules use: ``send``, ``recv`` / ``async for``,
    ``close(code, reason)`` and ``abort()``. The end of the stream, an abort and every relay close code come out
    as the ``ConnectionClosed`` a socket would raise (``exc.rcvd`` holds the relay's code and reason, ``None`` when
    the end was dropped), so code written against a socket works unchanged.

    Example:
        >>> refs = relay.create(8, owner=None)  # doctest: +SKIP
        >>> writer = relay.open_local(**refs["writer"])  # doctest: +SKIP
        >>> await writer.send(b"chunk"); await writer.close()  # doctest: +SKIP
    """

    __slots__ = ("_pipe", "channel_id", "direction")

    def __init__(self, channel_id: str, direction: str, pipe: _Pipe) -> None:
        self.channel_id = channel_id
        self.direction = direction
        self._pipe = pipe

    @property
    def is_open(self) -> bool:
        """``False`` once either side closed or dropped the end."""
        return self._pipe.is_open

    async def send(self, message: str | bytes) -> None:
        """Queue one message for the relay (write ends only); waits while the channel is full.

        Raises:
            ConnectionClosed: the end is closed (``exc.rcvd`` is the relay's close frame, if it sent one).
            TypeError: this is a read end, or ``message`` is not ``str``/``bytes``.
        """
        if self.direction != "write":
            raise TypeError(f"channel {self.channel_id}: cannot send on a read end")
        if not isinstance(message, str | bytes | bytearray):
            raise TypeError(f"channel message must be str or bytes, got {type(message).__name__}")
        await self._pipe.put(bytes(message) if isinstance(message, bytearray) else message, False)

    async def recv(self) -> str | bytes:
        """The next message (read ends); raises ``ConnectionClosed`` at the end of the stream or on abort."""
        pipe = self._pipe
        if self.direction != "read":
            await pipe.done.wait()
            assert pipe.user_exc is not None
            raise pipe.user_exc
        try:
            return await pipe.get()
        except ConnectionError:
            assert pipe.user_exc is not None
            raise pipe.user_exc from None

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this end: 1000 (or 1005) is end of stream for a writer; any other code aborts the channel."""
        frame = Close(code, reason[:120])
        self._pipe.shut(_closed(None, frame), _closed(frame, None))

    def abort(self) -> None:
        """Drop this end without a close code, like a lost connection (the relay treats a writer as aborted)."""
        self._pipe.shut(_closed(None, None), _closed(None, None))


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
        self.writer_end: _SocketEnd | _LocalEnd | None = None
        self.reader_end: _SocketEnd | _LocalEnd | None = None
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
        received from the writer socket (or waiting in a local writer end) but not yet taken by the relay;
        ``bytes_in``/``max_bytes``: the lifetime byte count and quota (``bytes_in`` is only counted under a quota).

        Raises:
            KeyError: no such channel.
        """
        ch = self._channels[channel_id]
        socket_bytes = ch.writer_end.pending_bytes() if ch.writer_end is not None else 0
        return {"queued": len(ch.items), "capacity": ch.capacity, "peak": ch.peak_items,
                "queued_bytes": ch.queued_bytes, "peak_bytes": ch.peak_bytes,
                "max_queued_bytes": self.max_queued_bytes, "socket_bytes": socket_bytes,
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
        if ch.writer_end is not None and ch.writer_state is _EndState.ATTACHED:
            self._spawn(self._close(ch.writer_end, CLOSE_READER_GONE, "channel discarded"))
        if ch.reader_end is not None and ch.reader_state is _EndState.ATTACHED:
            self._spawn(self._close(ch.reader_end, CLOSE_WRITER_ABORTED, "channel discarded"))
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
        await self._serve_end(_SocketEnd(ws), channel_id, key, direction)

    def open_local(self, channel_id: str, key: str, direction: str) -> LocalChannelEnd:
        """Attach an engine-internal end to a channel without a socket (ours; the REST API module uses it).

        The end goes through the same queue, backpressure, close codes and cleanup as a socket end; only the
        WebSocket handshake and framing are skipped. Remote workers keep using sockets.

        Raises:
            ChannelRefused: the key, direction or channel is wrong (the HTTP status a socket would have got).

        Example:
            >>> refs = relay.create(8, owner=None)  # doctest: +SKIP
            >>> reader = relay.open_local(**refs["reader"])  # doctest: +SKIP
            >>> [message async for message in reader]  # doctest: +SKIP
            [b'chunk']
        """
        refused = self.check(channel_id, key, direction)
        if refused is not None:
            raise ChannelRefused(*refused)
        pipe = _Pipe()
        end = _LocalEnd(pipe, writes=direction == "write")
        task: asyncio.Task[None] = asyncio.ensure_future(self._serve_end(end, channel_id, key, direction))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Like a server connection whose handler returned, died or was cancelled (even before it started, at
        # shutdown): the local side must not wait forever. A no-op when the relay already closed the end.
        task.add_done_callback(lambda _: end.abort())
        return LocalChannelEnd(channel_id, direction, pipe)

    async def _serve_end(self, end: _SocketEnd | _LocalEnd, channel_id: str, key: str, direction: str) -> None:
        channel = self._channels.get(channel_id)
        if channel is None or self.check(channel_id, key, direction) is not None:
            # The channel expired or was removed between check() and the upgrade.
            await self._close(end, CLOSE_EXPIRED, "channel no longer exists")
            return
        state = channel.writer_state if direction == "write" else channel.reader_state
        if state is not _EndState.NEW:
            log.info("channel %s: refusing a second %s connection", channel_id, direction)
            await self._close(end, CLOSE_ALREADY_ATTACHED, f"channel {direction} end is already attached")
            return
        if direction == "write":
            await self._serve_writer(channel, end)
        else:
            await self._serve_reader(channel, end)

    async def _serve_writer(self, ch: _Channel, ws: _SocketEnd | _LocalEnd) -> None:
        ch.writer_state = _EndState.ATTACHED
        ch.writer_end = ws
        self._check_deadline(ch)
        try:
            await self._pump_writer(ch, ws)
        finally:
            ch.writer_state = _EndState.DONE
            ch.writer_end = None
            if not ch.eof and ch.failure is None and not ch.reader_gone and not ch.expired:
                ch.failure = (CLOSE_WRITER_ABORTED, "writer ended unexpectedly")
            ch.wake_reader()
            self._maybe_remove(ch)

    async def _pump_writer(self, ch: _Channel, ws: _SocketEnd | _LocalEnd) -> None:
        items = ch.items
        capacity = ch.capacity
        limit = self.max_message_size
        quota = ch.max_bytes
        budget = self.max_queued_bytes
        frames = ws.frames
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
                await ws.close(CLOSE_TOO_BIG, f"message exceeds {limit} bytes", False)
                return
            if quota is not None:
                ch.bytes_in += len(message)
                if ch.bytes_in > quota:
                    why = f"channel byte quota of {quota} exceeded"
                    ch.failure = (CLOSE_WRITER_ABORTED, f"writer aborted: {why}")
                    await ws.close(CLOSE_TOO_BIG, why, False)
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

    async def _stop_writer(self, ch: _Channel, ws: _SocketEnd | _LocalEnd) -> None:
        """The reader left or the channel expired while the writer was still attached."""
        if self.production_mode:
            # Production drops the writer connection without a Close frame.
            ws.abort()
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

    async def _serve_reader(self, ch: _Channel, ws: _SocketEnd | _LocalEnd) -> None:
        ch.reader_state = _EndState.ATTACHED
        ch.reader_end = ws
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
            ch.reader_end = None
            if not (ch.eof and not ch.items) and ch.failure is None:
                self._reader_left(ch)
            self._maybe_remove(ch)

    async def _pump_reader(self, ch: _Channel, ws: _SocketEnd | _LocalEnd) -> None:
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
                await ws.send(message)  # raises the ConnectionClosed that ends this loop
                continue
            if ch.eof or ch.failure is not None:
                await self._close(ws, CLOSE_EOF, "")
                return
            await ch.wait_data()

    async def _watch_reader(self, ch: _Channel, ws: _SocketEnd | _LocalEnd) -> None:
        """Read the reader socket continuously (pings answered, Close noticed at once, §9.2 C1)."""
        try:
            while True:
                message = await ws.recv()
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
        writer = ch.writer_end
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
        writer = ch.writer_end
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
            for end in (ch.writer_end, ch.reader_end):
                if end is not None:
                    closing.append(self._close(end, 1001, "engine shutting down"))
            ch.wake_reader()
            ch.wake_writer()
        self._channels.clear()
        self._idle.set()
        await asyncio.gather(*closing, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ helpers

    async def _close(self, end: _SocketEnd | _LocalEnd, code: int, reason: str) -> None:
        # Production sends a Close frame without a status code in every case.
        await end.close(code, reason, self.production_mode)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
