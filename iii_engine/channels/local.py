"""In-process channel ends: the relay's :class:`~iii.channel_end.ChannelEnd` contract over a one-slot pipe.

:meth:`ChannelRelay.open_local <iii_engine.channels.ChannelRelay.open_local>` gives an engine module (the REST
API) a :class:`LocalChannelEnd`; the relay serves the other side of the same :class:`Pipe` as a
:class:`LocalRelayEnd`, with the very loops it runs for sockets. The module's side speaks the part of a
``websockets`` connection those modules use (``send``, ``recv``, ``close(code, reason)``, ``abort``, ``async
for``) and raises the ``ConnectionClosed`` a socket would; the relay's side speaks the contract.

Example:
    >>> str(ChannelRefused(404, "Channel not found"))
    'channel refused (404): Channel not found'
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from importlib import import_module
from typing import TYPE_CHECKING

import iii.ws_imports  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import OK_CLOSE_CODES, Close

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import BrokenChannel, ChannelCloseCode, ChannelEndClosed, ClosedEnd, Message, closed_from
from iii.errors import PicklesByState
from iii.waiters import Signal

if TYPE_CHECKING:
    from . import machine as m
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    m = import_module(".machine", __package__)
from .driver import LiveChannel


class ChannelRefused(PicklesByState, Exception):
    """:meth:`ChannelRelay.open_local` refused the end, with the HTTP status a socket upgrade would have got."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"channel refused ({status}): {message}")
        self.status = status
        self.message = message


def _closed(rcvd: Close | None, sent: Close | None) -> ConnectionClosed:
    """The exception websockets would raise for this pair of Close frames (``sent=None``: the peer's echo)."""
    ok = rcvd is not None and rcvd.code in OK_CLOSE_CODES and (sent is None or sent.code in OK_CLOSE_CODES)
    return (ConnectionClosedOK if ok else ConnectionClosedError)(rcvd, sent)


class Pipe:
    """The messages and close state shared by a :class:`LocalChannelEnd` and the relay's view of it.

    At most one message waits in ``items``: the producer's ``put`` returns only once the consumer has room, which
    is the in-process equivalent of a socket that stops being read.
    """

    __slots__ = ("_items", "_space", "done", "items", "relay_exc", "size", "user_exc")

    def __init__(self) -> None:
        self.items: deque[str | bytes] = deque()
        self.size = 0
        # What each side raises once the end is closed (None while open).
        self.user_exc: ConnectionClosed | None = None
        self.relay_exc: ChannelEndClosed | None = None
        self.done = asyncio.Event()
        self._items = Signal()
        self._space = Signal()

    @property
    def is_open(self) -> bool:
        """Whether neither side closed yet."""
        return self.user_exc is None

    def shut(self, user_exc: ConnectionClosed, relay_exc: ChannelEndClosed) -> None:
        """Close both sides (the first call wins)."""
        if self.user_exc is not None:
            return
        self.user_exc, self.relay_exc = user_exc, relay_exc
        self.done.set()
        self._items.set()
        self._space.set()

    async def put(self, message: str | bytes, by_relay: bool) -> None:
        """Queue ``message`` once the slot is free; raises the side's close exception once closed."""
        while self.items and self.user_exc is None:
            await self._space.wait()
        if self.user_exc is not None:
            raise self.relay_exc if by_relay and self.relay_exc is not None else self.user_exc
        self.items.append(message)
        self.size += len(message)
        self._items.set()

    async def get(self) -> str | bytes | None:
        """The next message, or ``None`` once the pipe is shut and empty."""
        while not self.items:
            if self.user_exc is not None:
                return None
            await self._items.wait()
        message = self.items.popleft()
        self.size -= len(message)
        self._space.set()
        return message


class LocalRelayEnd:
    """The relay's side of a :class:`LocalChannelEnd`: the :class:`~iii.channel_end.ChannelEnd` contract."""

    __slots__ = ("pipe", "writes")

    def __init__(self, pipe: Pipe, writes: bool) -> None:
        self.pipe = pipe
        self.writes = writes  # True: the local side writes into the channel and the relay receives

    @property
    def is_open(self) -> bool:
        """Whether neither side closed yet."""
        return self.pipe.is_open

    async def receive(self) -> Message:
        """The local writer's next message; a local reader never sends, so this waits for it to leave."""
        pipe = self.pipe
        if self.writes:
            message = await pipe.get()
            if message is not None:
                return (True, message.encode()) if isinstance(message, str) else (False, message)
        else:
            await pipe.done.wait()
        assert pipe.relay_exc is not None
        raise pipe.relay_exc

    async def send(self, data: bytes | memoryview, *, text: bool = False) -> None:
        """Hand one message to the local reader (text as ``str``, as a socket would deliver it)."""
        payload = bytes(data)
        await self.pipe.put(payload.decode() if text else payload, True)

    async def aclose(self, code: int | None = ChannelCloseCode.NORMAL, reason: str = "") -> None:
        """Close the local end as a socket Close from the relay would (``None``: without a code)."""
        frame = Close(ChannelCloseCode.NO_STATUS, "") if code is None else Close(code, reason[:120])
        self.pipe.shut(_closed(frame, None), ClosedEnd(None, ""))

    def abort(self) -> None:
        """Drop the end, like a lost connection."""
        self.pipe.shut(_closed(None, None), BrokenChannel(None))

    def unread_bytes(self) -> int:
        """Bytes the local writer queued and the relay did not take yet."""
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

    def __init__(self, channel_id: str, direction: str, pipe: Pipe) -> None:
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
        if self.direction == "read":
            message = await pipe.get()
            if message is not None:
                return message
        else:
            await pipe.done.wait()
        assert pipe.user_exc is not None
        raise pipe.user_exc

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
        self._pipe.shut(_closed(None, frame), closed_from(_closed(frame, None)))

    def abort(self) -> None:
        """Drop this end without a close code, like a lost connection (the relay treats a writer as aborted)."""
        self._pipe.shut(_closed(None, None), BrokenChannel(None))


class LocalReader(LocalChannelEnd):
    """A read end from :meth:`ChannelRelay.open_local` served straight from the channel's queue.

    No relay task and no pipe: :meth:`recv` takes the next step from the channel's machine itself, so a message
    costs no task switch and a reader that is never read costs nothing. Close codes, backpressure (the writer is
    woken once the queue is half empty) and cleanup are the relay's, as for every other end.
    """

    __slots__ = ("_ch", "_detach", "_exc")

    def __init__(self, ch: LiveChannel | None, detach: Callable[[], None]) -> None:  # no super(): no pipe
        self.channel_id = ch.id if ch is not None else ""
        self.direction = "read"
        self._ch = ch
        self._detach = detach
        self._exc: ConnectionClosed | None = None

    @classmethod
    def refused(cls, code: int | None, reason: str) -> LocalReader:
        """An end the relay closed as it attached (a second reader: 4009; a channel whose writer failed before any
        reader came: 4001 and the writer's reason)."""
        end = cls(None, lambda: None)
        end._end(Close(ChannelCloseCode.NO_STATUS if code is None else code, reason), None)
        return end

    @property
    def is_open(self) -> bool:
        """``False`` once the stream ended, was aborted, or this end was closed."""
        return self._exc is None

    async def recv(self) -> str | bytes:
        """The next message; raises ``ConnectionClosed`` at the end of the stream or on abort."""
        while self._exc is None:
            ch = self._ch
            assert ch is not None
            item = await ch.reader_next()
            if self._exc is not None:  # closed by another task while this one waited
                break
            if type(item) is tuple:
                ch.reader_took()
                text, data = item
                return data.decode() if text else data
            if item is None:  # the channel was discarded
                code = ch.machine.policy.wire_code(ChannelCloseCode.WRITER_ABORTED)
                self._end(Close(ChannelCloseCode.NO_STATUS if code is None else code, "channel discarded"), None)
            else:
                assert isinstance(item, m.Close)
                code = ChannelCloseCode.NO_STATUS if item.code is None else item.code
                self._end(Close(code, item.reason), None)
        raise self._exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Leave the channel; a writer still attached is told the reader left (4002)."""
        self._end(None, Close(code, reason[:120]))

    def abort(self) -> None:
        """Leave the channel without a close code (for the relay, the same as :meth:`close`)."""
        self._end(None, None)

    def _end(self, rcvd: Close | None, sent: Close | None) -> None:
        if self._exc is None:
            self._exc = _closed(rcvd, sent)
            self._detach()


__all__ = ["ChannelRefused", "LocalChannelEnd", "LocalReader", "LocalRelayEnd", "Pipe"]
