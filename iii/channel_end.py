"""The channel transport seam: one small contract for an end of a channel, shared by the SDK and the engine.

In the manner of anyio's stream contracts, a :class:`ChannelEnd` moves whole messages in order and tells the
three ways a stream stops apart:

=================== ====================================================================================
:class:`EndOfChannel` the peer ended the stream normally (Close 1000, or a Close without a code)
:class:`BrokenChannel` the peer closed with any other code (``.code``), or the connection dropped (``None``)
:class:`ClosedEnd`     this end was closed first, locally; ``.code``/``.reason`` are what the peer answered
=================== ====================================================================================

Two implementations: :class:`WebSocketEnd` (a ``websockets`` connection, client or server, through
:mod:`iii.ws_fastpath`) and the engine's in-process pipe (``iii_engine.channels.local``). The SDK's channel ends
and the engine's relay are written against the contract only. :class:`ChannelCloseCode` is the one list of close
codes both sides use.

Example:
    >>> ChannelCloseCode.IN_USE, int(ChannelCloseCode.WRITER_ABORTED)
    (<ChannelCloseCode.IN_USE: 4009>, 4001)
    >>> str(BrokenChannel(None, ""))
    'connection dropped without a Close frame'
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
from collections.abc import Awaitable, Callable, Iterable
from importlib import import_module
from typing import TYPE_CHECKING, Final, Protocol

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from . import ws_fastpath
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    ws_fastpath = import_module(".ws_fastpath", __package__)
from .errors import PicklesByState


class ChannelCloseCode(enum.IntEnum):
    """WebSocket close codes on channel sockets (docs/protocol.md#channel-improvements; the 4xxx codes are this
    toolkit's)."""

    NORMAL = 1000  # end of stream
    GOING_AWAY = 1001  # the engine is shutting down
    NO_STATUS = 1005  # a Close frame without a code: end of stream for the production engine
    INVALID_DATA = 1007  # a text message that is not UTF-8
    TOO_BIG = 1009  # a message over the size limit, or the channel's byte quota ran out
    WRITER_ABORTED = 4001  # to the reader: the writer aborted (or the channel was discarded)
    READER_GONE = 4002  # to the writer: the reader left before the end
    EXPIRED = 4003  # the other end never attached in time
    IN_USE = 4009  # this end of the channel is already attached


EOF_CODES: Final = frozenset({ChannelCloseCode.NORMAL, ChannelCloseCode.NO_STATUS})
"""Close codes that mean "end of stream"."""

Message = tuple[bool, bytes]
"""A channel message as ``(is_text, payload)``; text stays UTF-8 bytes so relays never decode it."""


FRAME_SIZE_HEADER: Final = "X-III-Channel-Frame-Size"
"""Response header of our engine's writer upgrades (docs/protocol.md#frame-size-extension): the largest binary
frame the engine invites from that writer. The production engine (and any other server) sends none."""

INVITED_FRAME_SIZES: Final = (64 * 1024, 1024 * 1024)
"""(least, most) frame size a writer takes from :data:`FRAME_SIZE_HEADER`: the least is the reference SDK's
frame size, what a writer uses when no header is sent; the most is what every known reader accepts (websockets'
default ``max_size`` of 1 MiB, which the reference SDK's reader keeps)."""

_DIGITS = re.compile(r"[0-9]{1,12}")


def invited_frame_size(values: list[str]) -> int:
    """The binary frame size a writer uses, from the :data:`FRAME_SIZE_HEADER` values of its upgrade response:
    the one value clamped to :data:`INVITED_FRAME_SIZES`; none, several or a malformed one: 64 KiB.

    Example:
        >>> invited_frame_size([]), invited_frame_size(["1048576"]), invited_frame_size(["262144"])
        (65536, 1048576, 262144)
        >>> invited_frame_size(["99999999"]), invited_frame_size(["1000"]), invited_frame_size(["1e6"])
        (1048576, 65536, 65536)
    """
    least, most = INVITED_FRAME_SIZES
    if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
        return least
    return max(least, min(most, int(values[0])))


class ChannelEndClosed(PicklesByState, Exception):
    """Base of the three ways a channel end stops (see the module docstring).

    Attributes:
        code: the close code received from the peer (``None``: none).
        reason: the close reason received.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"closed with code {self.code}" + (f": {self.reason}" if self.reason else "")


class EndOfChannel(ChannelEndClosed):
    """The peer ended the stream normally; every message before it was delivered."""


class BrokenChannel(ChannelEndClosed):
    """The peer closed with a code other than end-of-stream, or the connection dropped (``code is None``)."""

    def _describe(self) -> str:
        return "connection dropped without a Close frame" if self.code is None else super()._describe()


class ClosedEnd(ChannelEndClosed):
    """This end was closed locally before the peer closed."""


class ChannelEnd(Protocol):
    """One end of a channel transport: ordered messages, then exactly one :class:`ChannelEndClosed`."""

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent and received."""
        ...

    async def send(self, data: bytes | memoryview, *, text: bool = False) -> None:
        """Send ``data`` (UTF-8 when ``text``); raises :class:`ChannelEndClosed` once the end is closed."""
        ...

    async def receive(self) -> Message:
        """The next message; raises :class:`ChannelEndClosed` at the end of the stream."""
        ...

    async def aclose(self, code: int | None = ChannelCloseCode.NORMAL, reason: str = "") -> None:
        """Close with ``code`` (``None``: a Close frame without a code); never raises."""
        ...

    def abort(self) -> None:
        """Drop the end without a Close frame."""
        ...

    def unread_bytes(self) -> int:
        """Payload bytes received and not read yet."""
        ...


async def close_draining(end: ChannelEnd, closing: Awaitable[object]) -> None:
    """Await ``closing`` (a close of ``end`` under way) while reading and dropping what still arrives: unread
    messages would fill the receive queue, reading would pause, the peer's Close reply would never be seen and
    the close would wait for its timeout."""
    started = asyncio.ensure_future(closing)
    try:
        while True:
            await end.receive()
    except ChannelEndClosed:
        pass
    await started


def closed_from(exc: ConnectionClosed) -> ChannelEndClosed:
    """The contract's exception for how a websockets connection closed.

    Example:
        >>> from websockets.frames import Close
        >>> closed_from(ConnectionClosed(Close(4001, "x"), None))
        BrokenChannel('closed with code 4001: x')
    """
    rcvd = exc.rcvd
    code = rcvd.code if rcvd is not None else None
    reason = rcvd.reason if rcvd is not None else ""
    if exc.sent is not None and exc.rcvd_then_sent is False:
        return ClosedEnd(code, reason)
    if code in EOF_CODES:
        return EndOfChannel(code, reason)
    return BrokenChannel(code, reason)


class WebSocketEnd:
    """:class:`ChannelEnd` over a ``websockets`` connection (client or server side).

    A client's binary ``send`` goes out as frames of :attr:`frame_size` bytes at most: 64 KiB (the reference
    SDK's size) unless the server's upgrade response invited larger ones (:data:`FRAME_SIZE_HEADER`, our engine).
    A server sends each message as one frame. Both sides use the fast paths of :mod:`iii.ws_fastpath`.
    """

    __slots__ = ("_client", "_receive", "_send", "frame_size", "ws")

    def __init__(self, ws: Connection) -> None:
        self.ws = ws
        self._receive = ws_fastpath.receiver(ws)
        self._client = isinstance(ws, ClientConnection)
        self._send = self._send_client if self._client else self._send_server
        response = ws.response if self._client else None
        self.frame_size = invited_frame_size(response.headers.get_all(FRAME_SIZE_HEADER) if response else [])

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        return ws_fastpath.is_open(self.ws)

    async def send(self, data: bytes | memoryview, *, text: bool = False) -> None:
        """Send one message (see the class docstring for framing)."""
        try:
            await self._send(data, text)
        except ConnectionClosed as exc:
            raise closed_from(exc) from exc

    async def _send_client(self, data: bytes | memoryview, text: bool) -> None:
        await ws_fastpath.send_data(self.ws, data, text=text, frame_size=self.frame_size)

    async def _send_server(self, data: bytes | memoryview, text: bool) -> None:
        await ws_fastpath.send_server_frame(self.ws, text, data if isinstance(data, bytes) else bytes(data))

    async def send_batch(self, messages: list[Message]) -> None:
        """Send several messages in order: from the server side of a fast connection, with one write and one
        flow-control wait (the relay's path); otherwise one :meth:`send` each."""
        if self._client:
            for text, payload in messages:
                await self.send(payload, text=text)
            return
        try:
            await ws_fastpath.send_server_frames(self.ws, messages)
        except ConnectionClosed as exc:
            raise closed_from(exc) from exc

    def guard_close(self, guard: Callable[[Iterable[Message]], bool]) -> None:
        """A peer's Close behind unread messages waits while ``guard(unread)`` says the relay will refuse one of
        them (the relay's writer ends; see :func:`iii.ws_fastpath.guard_close`)."""
        ws_fastpath.guard_close(self.ws, guard)

    def take_ready(self, max_count: int, max_bytes: int) -> list[Message]:
        """Messages already received, without waiting: at most ``max_count``, taken while fewer than
        ``max_bytes`` payload bytes are taken (the last may go past it); empty when none is ready (or this
        connection has no fast receive path)."""
        return ws_fastpath.take_ready(self.ws, max_count, max_bytes)

    async def receive(self) -> Message:
        """The next message as ``(is_text, payload)``."""
        try:
            message: Message = await self._receive()
        except ConnectionClosed as exc:
            raise closed_from(exc) from exc
        return message

    async def aclose(self, code: int | None = ChannelCloseCode.NORMAL, reason: str = "") -> None:
        """Close (``None``: a bare Close frame, as the production engine sends) and wait for the handshake."""
        if code is None:
            await ws_fastpath.send_bare_close(self.ws)
            return
        ws_fastpath.flush(self.ws)
        if not ws_fastpath.is_open(self.ws):
            return
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, reason[:120])

    async def drain(self) -> None:
        """Wait until what was sent left this end's buffers (the transport's down to its low-water mark: empty
        for the SDK's plain channel sockets). Never raises: a closed connection shows at the next send or close.

        Between two sync calls of a channel end no loop runs to write out what the transport kept, so a sync
        write waits here before it returns."""
        ws_fastpath.flush(self.ws)
        with contextlib.suppress(Exception):
            await self.ws.drain()

    def abort(self) -> None:
        """Drop the TCP connection without a Close frame."""
        ws_fastpath.abort(self.ws)

    def unread_bytes(self) -> int:
        """Payload bytes received and not read yet."""
        return ws_fastpath.unread_bytes(self.ws)

    def set_receive_buffer(self, size: int) -> None:
        """Stop reading the socket while more than ``size`` bytes of messages are unread (a connection on the fast
        receive path; others keep websockets' own frame queue)."""
        setter = getattr(self.ws, "set_receive_buffer", None)
        if setter is not None:
            setter(size)

    def peer_close(self) -> ChannelEndClosed | None:
        """How the peer closed, once it has sent its Close (``None`` before that)."""
        rcvd, sent = ws_fastpath.close_frames(self.ws)
        if rcvd is None:
            return None
        return closed_from(ConnectionClosed(rcvd, sent, True))

    def __repr__(self) -> str:
        return f"WebSocketEnd({self.ws!r})"


__all__ = [
    "EOF_CODES",
    "FRAME_SIZE_HEADER",
    "INVITED_FRAME_SIZES",
    "BrokenChannel",
    "ChannelCloseCode",
    "ChannelEnd",
    "ChannelEndClosed",
    "ClosedEnd",
    "EndOfChannel",
    "Message",
    "WebSocketEnd",
    "close_draining",
    "closed_from",
    "invited_frame_size",
]
