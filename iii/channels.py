"""Channel ends: stream bytes and text messages through the engine (docs/protocol.md#channels,
docs/protocol.md#production-behaviour-our-sdk-copes-with, docs/protocol.md#sdk-improvements S10-S11).

Same API as the reference SDK's ``iii.channels`` (``ChannelWriter``, ``ChannelReader``, ``WritableStream``,
``ReadableStream``, ``build_channel_url``), with its faults fixed:

* no keepalive ping timeout on channel sockets (the production engine never answers a reader's pings);
* ``close_async`` waits for every queued write instead of sleeping 10 ms, and a writer that never wrote still
  connects to deliver end-of-stream;
* the sync ``.stream`` API and ``send_message`` go through one ordered queue; ``WritableStream.write`` returns
  ``False`` once more than ``high_water_mark`` bytes are queued (``await stream.drain()`` then waits);
* the sync API works in any sequence from code with no running loop (``write``, ``write``, ``end``; ``write``,
  ``close``): the reference ran each call in an ``asyncio.run`` of its own, so the socket the first call opened
  belonged to a closed loop at the second (``RuntimeError: ... attached to a different loop``, and no end of
  stream for the reader). See "Event loops" below;
* text messages reach ``on_message`` callbacks during any read (iteration, ``read_all``, ``recv``);
* abnormal closes raise precise errors (below) instead of ending the stream silently;
* channel objects inside payloads serialise as their refs (``__iii_json__``).

Errors (all subclasses of :class:`ChannelError`):

======================== =================================================================================
ChannelNotFoundError     the engine refused the upgrade with 404: unknown channel, wrong key or direction
ChannelConnectionError   any other handshake failure, or the socket closed abnormally (1006, 1009, 1011…)
ChannelAbortedError      reader side: the writer aborted (our engine's close code 4001)
ChannelExpiredError      the other end never connected before the channel's deadline (4003)
ReaderGoneError          writer side: the reader left before the end (4002; or the socket dropped, which is
                         how the production engine signals it)
ChannelInUseError        this end of the channel is already attached to another connection (4009)
ChannelClosedError       this end was already closed locally
ChannelLoopError         this end was used from an event loop other than the one it belongs to (also a
                         ``RuntimeError``)
LimitExceededError       ``read_all(limit=...)``: more than ``limit`` bytes arrived
======================== =================================================================================

Event loops: a channel end belongs to the first event loop that uses it (its socket, tasks and futures live
there). Async methods must be awaited on that loop. The sync methods (``stream.write``, ``stream.end``,
``send_message``, ``close``) work from anywhere:

* where no loop runs (a script, a sync handler's thread): the call blocks until its work is done, written out to
  the socket, or raises. An end first used this way runs on a private loop of its own, in the calling thread,
  kept from one sync call to the next and closed once the end is closed (no thread, no loop per call). An end
  that belongs to a loop running in another thread has the call run there (``asyncio.to_thread`` from async code);
* on the end's own running loop: the call queues its work and returns at once (fire-and-forget, as in the
  reference); ``close`` logs its errors, ``await close_async()`` raises them.

Anything else (a sync call from another running loop, an async method awaited on another loop, an end whose loop
is closed, e.g. by an ``asyncio.run`` that returned) raises :class:`ChannelLoopError` saying so, instead of
asyncio's "attached to a different loop" or a wait for good.
An end that has nothing on its loop (no socket, no call under way: a read or write cancelled before it
connected), when that loop is closed or not running, moves to the loop that uses it next instead. A writer closed
for good (its close over, or aborted with its socket closed) has nothing left there either: ``close``,
``stream.end`` and ``close_async`` on any loop answer as on its own.

Example:
    >>> ref = StreamChannelRef(channel_id="c1", access_key="k", direction="write")
    >>> writer = ChannelWriter("ws://localhost:49134/", ref)
    >>> writer.__iii_json__()
    {'channel_id': 'c1', 'access_key': 'k', 'direction': 'write'}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from importlib import import_module
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, cast
from urllib.parse import quote

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

if TYPE_CHECKING:
    from . import ws_fastpath
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    ws_fastpath = import_module(".ws_fastpath", __package__)
from .channel_end import EOF_CODES, ChannelCloseCode, ChannelEndClosed, ClosedEnd, WebSocketEnd, close_draining
from .errors import IIIError
from .iii_types import StreamChannelRef
from .waiters import Broadcast

log = logging.getLogger(__name__)

T = TypeVar("T")


def _running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    """The running loop, or ``None`` where no loop runs (public API only)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _running_loop_accessor() -> Callable[[], asyncio.AbstractEventLoop | None]:
    """asyncio's C accessor ``_get_running_loop`` (``None`` where no loop runs, without the exception
    ``get_running_loop`` raises and this catches there; it is on every hot path of the sync API), or the public
    API where a Python lacks that private name.

    Example:
        >>> _running_loop_accessor()() is None
        True
    """
    accessor = getattr(asyncio, "_get_running_loop", None)
    return accessor if callable(accessor) else _running_loop_or_none


_running_loop = _running_loop_accessor()

MAX_FRAME_SIZE: Final = ws_fastpath.MAX_FRAME_SIZE
"""Binary writes are split into frames of at most this many bytes (same as the reference, so any peer reads them),
unless the engine invites larger ones (our engine: docs/protocol.md#frame-size-extension)."""

DEFAULT_HIGH_WATER_MARK: Final = 1024 * 1024
"""Bytes queued through the sync API before ``WritableStream.write`` returns ``False``."""

TEXT_PIECE_CHARS: Final = 65_536
"""A str handed to ``write``, ``stream.write`` or ``stream.end`` goes out as text messages of at most this many
characters, as the reference SDK's writer cuts it: its reader keeps websockets' 1 MiB message limit, and took a
longer message's 1009 close for a normal end of stream (a short stream, read as complete)."""

# How long an abort waits for its close handshake: its Close frame written out, then the peer's reply. websockets'
# close first waits, with no deadline, for the socket to drain: behind a reader that stopped reading, abort() never
# returned. Past this the TCP connection is dropped, which the engine takes as an abort too.
_ABORT_CLOSE_S = 2.0
# How long a reader released with nothing left unread waits for its writer's end of stream before it closes: a
# handler that read exactly the bytes it expected returns before the writer's Close has crossed the engine, and
# closing at once told that writer "reader gone" after a complete transfer (2 of 450 writers; a retrying writer
# sends twice). Costs a handler that stops mid-stream, with nothing arriving, this much before its answer.
_RELEASE_GRACE_S = 0.25
# How often a sync call handed to its end's loop in another thread checks that the loop still runs.
_LOOP_CHECK_S = 0.25
# The most an abort made on a loop its writer does not belong to waits for the writer's own loop to carry it out:
# the connect of a writer that never connected (open_timeout, 10 s), then its Close frame (_ABORT_CLOSE_S).
_ABORT_ELSEWHERE_S = 15.0
# How long such an abort's caller waits for the writer's loop to start carrying it out before it returns and leaves
# the abort to go on without it: a loop held by a sync handler, or stuck in C code, held the caller for all of
# _ABORT_ELSEWHERE_S. The writer is aborted before this wait all the same: no later write or close delivers.
_ABORT_START_WAIT_S = 0.25

# Options for every channel socket: no ping timeout (T19), no compression (throughput), no size limit (T27).
_CONNECT_OPTIONS: Final[dict[str, Any]] = {
    "ping_interval": None,
    "ping_timeout": None,
    "compression": None,
    "max_size": None,
    "open_timeout": 10,
    "write_limit": ws_fastpath.CLIENT_WRITE_BUFFER,
}
# Over TLS the marks of before CLIENT_WRITE_BUFFER: asyncio's TLS transport pauses writing once its buffer holds
# ``>= high`` bytes, so at (0, 0) it pauses with nothing buffered and then flips between resume and pause on each
# empty flush; a send could wait in drain for a resume that never comes. (TLS copies every byte it encrypts anyway:
# there is no copy for (0, 0) to save.) FastClientConnection also sees a TLS transport the URL does not show (an
# https:// proxy); this covers wss:// where websockets lacks what the fast path needs (plain ClientConnection).
_TLS_CONNECT_OPTIONS: Final[dict[str, Any]] = {**_CONNECT_OPTIONS, "write_limit": ws_fastpath.WRITE_BUFFER}


# ---------------------------------------------------------------------------------------------------- errors


class ChannelError(IIIError):
    """Base of every channel error.

    Attributes:
        channel_id: the channel concerned.
        code: the WebSocket close code that signalled it, if any.
        reason: the close reason text, if any.
        partial: raised by a ``read_all`` part-way (:meth:`ChannelReader.read_all`,
            ``iii_channels.ChannelSource.read_all``): the bytes it had read by then, which a note on the error
            counts; ``None`` otherwise (``IncompleteReadError`` has its own).
    """

    partial: bytes | None = None

    def __init__(self, message: str, *, channel_id: str = "", code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.channel_id = channel_id
        self.code = code
        self.reason = reason


def keep_partial(error: BaseException, parts: list[bytes], read: str) -> None:
    """Hand ``error``, raised part-way through ``read`` (a read of a whole stream), the bytes ``parts`` it had read:
    as its :attr:`ChannelError.partial`, with a note counting them (shown with its traceback). A read that fails
    returns nothing, yet its caller may want to know, or keep, what arrived. ``parts`` is emptied: the error holds
    the bytes once. Only a :class:`ChannelError` with no ``partial`` yet takes them (a cancellation, or a
    callback's own error, is left as it is).

    Example:
        >>> error = ChannelAbortedError("channel c1: the writer aborted", channel_id="c1")
        >>> keep_partial(error, [b"ab", b"c"], "read_all")
        >>> error.partial, error.__notes__
        (b'abc', ['read_all had read 3 bytes of the stream when this was raised (kept in .partial)'])
    """
    if not isinstance(error, ChannelError) or error.partial is not None:
        return
    error.partial = b"".join(parts)
    parts.clear()
    error.add_note(f"{read} had read {len(error.partial)} bytes of the stream when this was raised (kept in .partial)")


class ChannelNotFoundError(ChannelError):
    """The engine answered the upgrade with HTTP 404: unknown channel id, wrong key, or wrong direction."""


class ChannelConnectionError(ChannelError):
    """The channel socket could not be opened, or closed abnormally (no Close frame, 1009, 1011, …)."""


class ChannelAbortedError(ChannelError):
    """The writer aborted the stream; the data received so far is incomplete."""


class ChannelExpiredError(ChannelAbortedError):
    """The other end never connected before the channel's attach deadline."""


class ReaderGoneError(ChannelError):
    """The reader closed or disconnected before the end; stop writing."""


class ChannelInUseError(ChannelError):
    """This end of the channel is already attached to another connection."""


class ChannelClosedError(ChannelError):
    """This channel end was already closed locally."""


class ChannelLoopError(ChannelError, RuntimeError):
    """This channel end was used from an event loop it does not belong to, or its loop is gone (module docstring,
    "Event loops"). A ``RuntimeError`` too, like asyncio's own "attached to a different loop" it replaces.

    Example:
        >>> issubclass(ChannelLoopError, RuntimeError)
        True
    """


class LimitExceededError(ChannelError):
    """Reading would hold more than the caller's ``limit`` (bytes, unless the message names another unit):
    :meth:`ChannelReader.read_all` past its ``limit``, and ``iii_channels``' bounded reads.

    Example:
        >>> error = LimitExceededError(10)
        >>> str(error), error.limit
        ('stream exceeds the limit of 10 bytes', 10)
    """

    def __init__(self, limit: int, what: str = "stream", unit: str = "bytes", *, channel_id: str = "") -> None:
        super().__init__(f"{what} exceeds the limit of {limit} {unit}", channel_id=channel_id)
        self.limit = limit


async def read_to_end(next_chunk: Callable[[], Awaitable[bytes | None]], put_back: Callable[[bytes], None],
                      limit: int | None, read: str, channel_id: str = "") -> bytes:
    """The chunks ``next_chunk()`` returns until its ``None`` (end of stream), joined: the body of ``read`` (its
    name, for errors and notes), a read of a whole stream, that returns all of it or raises.

    * More than ``limit`` bytes (``None``: no limit; else an int, 0 or more): :class:`LimitExceededError`. The
      chunk that crossed it goes to ``put_back``, unread (the first chunk, what an earlier read left, may be it):
      the error's :attr:`~ChannelError.partial` holds at most ``limit`` bytes, and it followed by the next reads is
      the whole stream.
    * Any other :class:`ChannelError` (an abort, a broken stream) holds what was read as its ``partial``
      (:func:`keep_partial`).
    * A :class:`ChannelError` that is a ``TimeoutError`` (a wait that ran out, the channel left open), or
      anything else (a cancellation: an ``asyncio.wait_for`` that timed out), hands what was read to ``put_back``
      for the next read: a retried read returns the whole stream, not only the rest of it (such an error's
      ``partial`` is ``b""``: nothing taken).

    Example:
        >>> chunks, unread = [b"ab", b"cd", b"ef"], []
        >>> async def next_chunk() -> bytes | None:
        ...     return chunks.pop(0) if chunks else None
        >>> async def read() -> bytes:
        ...     try:
        ...         return await read_to_end(next_chunk, unread.append, 5, "read_all")
        ...     except LimitExceededError as exc:
        ...         return exc.partial or b""
        >>> asyncio.run(read()), unread
        (b'abcd', [b'ef'])
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise TypeError(f"{read}: limit must be an int (a number of bytes) or None, not {type(limit).__name__}")
    if limit is not None and limit < 0:
        raise ValueError(f"{read}: limit must be 0 or more (bytes), got {limit}")
    parts: list[bytes] = []
    size = 0
    try:
        while (chunk := await next_chunk()) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                put_back(chunk)
                raise LimitExceededError(limit, channel_id=channel_id)
            parts.append(chunk)
    except ChannelError as exc:
        if not isinstance(exc, TimeoutError):
            keep_partial(exc, parts, read)
            raise
        put_back(b"".join(parts))
        exc.partial = b""
        exc.add_note(f"{read} had read {size} bytes of the stream when this was raised (put back for the next "
                     "read)")
        raise
    except BaseException:
        put_back(b"".join(parts))
        raise
    return b"".join(parts)


def build_channel_url(engine_ws_base: str, channel_id: str, access_key: str, direction: str) -> str:
    """``ws://host:port/ws/channels/<id>?key=<key>&dir=<direction>`` (docs/protocol.md#channels).

    Example:
        >>> build_channel_url("ws://localhost:49134/", "c1", "a/b", "read")
        'ws://localhost:49134/ws/channels/c1?key=a%2Fb&dir=read'
    """
    base = engine_ws_base.rstrip("/")
    return f"{base}/ws/channels/{channel_id}?key={quote(access_key, safe='')}&dir={direction}"


def _as_ref(ref: StreamChannelRef | dict[str, Any]) -> StreamChannelRef:
    return ref if isinstance(ref, StreamChannelRef) else StreamChannelRef.model_validate(ref)


def binary_payload(data: object, caller: str, text_call: str | None) -> bytes:
    """``data``, bytes-like, as the bytes of a binary write; :class:`TypeError` naming ``caller`` otherwise (as the
    reference raises). ``bytes(data)`` took an int for that many zero bytes and a list of ints for their bytes,
    sent silently; ``text_call`` is the call that sends text instead (``None``: ``caller`` itself takes a str,
    as a text message, and the error says so).

    Example:
        >>> binary_payload(memoryview(b"--ab")[2:], "write", "send_message")
        b'ab'
        >>> binary_payload(5, "WritableStream.write", "send_message")
        Traceback (most recent call last):
        ...
        TypeError: WritableStream.write takes bytes-like data, not int (use send_message for text messages)
        >>> binary_payload(5, "WritableStream.write", None)
        Traceback (most recent call last):
        ...
        TypeError: WritableStream.write takes bytes-like data or a str (sent as a text message), not int
    """
    if type(data) is bytes:
        return data
    return bytes(binary_view(data, caller, text_call))


def binary_view(data: object, caller: str, text_call: str | None) -> memoryview:
    """``data``, bytes-like, as a view of its bytes, not copied; :class:`TypeError` as :func:`binary_payload`'s
    otherwise.

    Example:
        >>> binary_view(bytearray(b"ab"), "write", "send_message").tobytes()
        b'ab'
        >>> binary_view([66, 67], "ChannelWriter.write", "send_message_async")
        Traceback (most recent call last):
        ...
        TypeError: ChannelWriter.write takes bytes-like data, not list (use send_message_async for text messages)
    """
    try:
        return memoryview(data)  # type: ignore[arg-type]  # anything else is refused here
    except TypeError:
        if text_call is None:
            raise TypeError(f"{caller} takes bytes-like data or a str (sent as a text message), not "
                            f"{type(data).__name__}") from None
        raise TypeError(f"{caller} takes bytes-like data, not {type(data).__name__} "
                        f"(use {text_call} for text messages)") from None


class _Text:
    """A str to send as text, encoded when the call that sends it is made: its UTF-8 ``pieces``, each a text
    message of its own (in order, no other write between them), and ``len()`` their bytes (what the queue counts
    against the high-water mark)."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.size = sum(map(len, pieces))

    def __len__(self) -> int:
        return self.size


def _text_payload(text: str, caller: str, piece_chars: int | None) -> _Text:
    """``text`` encoded as UTF-8 for ``caller``, cut into text messages of ``piece_chars`` characters at most
    (``None``: one message). A str that cannot be encoded (a lone surrogate) raises :class:`UnicodeEncodeError`
    here, at the call, with the position in ``text`` and a note naming ``caller``: found when its message was
    sent, the writer's queue failed with nothing the reader could see, and the reader waited for good.

    Example:
        >>> [len(piece) for piece in _text_payload("é" * 5, "write", 2).pieces]
        [4, 4, 2]
        >>> _text_payload("ab\\ud800", "write", None)
        Traceback (most recent call last):
        ...
        UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' in position 2: surrogates not allowed
        write: a str sent as text must be UTF-8-encodable (a lone surrogate is not); nothing of it was queued or sent
    """
    step = piece_chars or max(1, len(text))
    pieces: list[bytes] = []
    for at in range(0, max(1, len(text)), step):
        try:
            pieces.append(str.encode(text[at : at + step]))  # str's own: a subclass's encode may say anything
        except UnicodeEncodeError as exc:
            error = UnicodeEncodeError(exc.encoding, text, at + exc.start, at + exc.end, exc.reason)
            error.add_note(f"{caller}: a str sent as text must be UTF-8-encodable (a lone surrogate is not); "
                           "nothing of it was queued or sent")
            raise error from None
    return _Text(pieces)


def _payload(data: object, caller: str, piece_chars: int | None) -> bytes | _Text:
    """What ``caller`` sends of ``data``: a str as text, in pieces of ``piece_chars`` characters (``write``-like
    callers: :data:`TEXT_PIECE_CHARS`) or as one message never cut (``send_message``-like: ``None``, as the
    reference's ``ws.send`` sends it); bytes-like data as bytes; :class:`TypeError` (or :class:`UnicodeEncodeError`)
    otherwise, before anything happens."""
    if isinstance(data, str):
        return _text_payload(data, caller, piece_chars)
    return binary_payload(data, caller, None)


async def _connect(url: str, channel_id: str, receives_data: bool = True,
                   on_connection: Callable[[], None] | None = None) -> WebSocketEnd:
    """A channel end's socket; ``receives_data``: false for a writer's (:func:`iii.ws_fastpath.client_factory`).
    ``on_connection()`` is called once the TCP connection is made, before the upgrade request goes out."""
    try:
        options = _TLS_CONNECT_OPTIONS if url[:6].lower() == "wss://" else _CONNECT_OPTIONS
        factory = ws_fastpath.client_factory(receives_data)
        if on_connection is not None:
            base = factory or ClientConnection
            made = on_connection

            def connection(*args: Any, **kwargs: Any) -> ClientConnection:
                made()
                return base(*args, **kwargs)

            # websockets calls its create_connection as a factory (a class is what its annotation expects)
            factory = cast("type[ClientConnection]", connection)
        return WebSocketEnd(await websockets.connect(url, create_connection=factory, **options))
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 404:
            raise ChannelNotFoundError(
                f"channel {channel_id} not found (unknown id, wrong key or wrong direction)", channel_id=channel_id
            ) from exc
        raise ChannelConnectionError(
            f"engine refused channel {channel_id} with HTTP {status}{_refusal_detail(exc)}", channel_id=channel_id
        ) from exc
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        raise ChannelConnectionError(f"cannot connect to channel {channel_id}: {exc}", channel_id=channel_id) from exc


def _refusal_detail(exc: InvalidStatus) -> str:
    """What a refused upgrade's answer says (its body's first line, its ``Retry-After``), for the error: a 503 of
    the engine's socket bounds names the bound and is temporary, and the error said neither."""
    response = exc.response
    body = bytes(response.body or b"").decode("utf-8", "replace").strip().splitlines()
    detail = f": {body[0][:300]}" if body else ""
    retry = response.headers.get("Retry-After")
    if retry is not None:
        detail += f" (temporary: try again after {retry[:20]} s)"
    return detail


class _SharedConnect:
    """The one connect of a channel end, shared by every call that waits for it (a writer's writes, close and
    abort; a reader's reads); ``on_socket(end)`` is handed its socket as it connects, before any waiter resumes.

    A caller cancelled while it waits leaves the connect to the others (an abort waiting for it reaches the
    reader). When nobody else waits, the connect goes with its caller only while nothing of it reached the
    engine (no TCP connection yet): left running then, its socket attached with nobody to close it. Past that
    point the engine may have attached the end already, and a connect cut there dropped an attached end: the
    engine took it as the writer aborting or the reader leaving, and the caller's retry got
    :class:`ChannelInUseError`. It goes on then (``open_timeout``, 10 s, at most) and the end's next call gets its
    socket. A connect that failed, or went with its caller, is made afresh by the next call.

    Example:
        >>> connect = _SharedConnect("ws://127.0.0.1:9/ws/channels/c1?key=k&dir=read", "c1", True, print)
        >>> connect.under_way
        False
    """

    __slots__ = ("_channel_id", "_future", "_made", "_on_socket", "_receives_data", "_url", "_waiters")

    def __init__(self, url: str, channel_id: str, receives_data: bool,
                 on_socket: Callable[[WebSocketEnd], Any]) -> None:
        self._url = url
        self._channel_id = channel_id
        self._receives_data = receives_data
        self._on_socket = on_socket
        self._future: asyncio.Future[WebSocketEnd] | None = None
        self._made = False  # the connect under way has its TCP connection: the engine may attach the end any time
        self._waiters = 0

    @property
    def under_way(self) -> bool:
        """Whether a connect runs now."""
        return self._future is not None

    @property
    def waited_for(self) -> bool:
        """Whether a call waits for the connect under way (it gets the socket)."""
        return self._waiters > 0

    async def wait(self) -> WebSocketEnd:
        """The socket of the connect under way, or of one started now."""
        while True:
            if self._future is None:
                self._made = False
                self._future = asyncio.ensure_future(
                    _connect(self._url, self._channel_id, self._receives_data, self._connection_made))
                self._future.add_done_callback(self._done)
            connecting = self._future
            self._waiters += 1
            try:
                return await asyncio.shield(connecting)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if connecting.cancelled() and (task is None or not task.cancelling()):
                    # the connect went with an earlier caller, not this one: connect afresh
                    if self._future is connecting:
                        self._future = None
                    continue
                if self._waiters == 1 and not connecting.done() and not self._made:
                    connecting.cancel()
                raise
            finally:
                self._waiters -= 1

    def _connection_made(self) -> None:
        self._made = True

    def _done(self, connecting: asyncio.Future[WebSocketEnd]) -> None:
        if self._future is connecting:
            self._future = None
        if not connecting.cancelled() and connecting.exception() is None:
            self._on_socket(connecting.result())


def _closed_error(exc: ChannelEndClosed, channel_id: str, side: Literal["read", "write"]) -> ChannelError | None:
    """Map how a channel socket closed to an error, or ``None`` for a normal end of stream (reader side)."""
    code, reason = exc.code, exc.reason
    detail = f": {reason}" if reason else ""
    kw: dict[str, Any] = {"channel_id": channel_id, "code": code, "reason": reason}
    if isinstance(exc, ClosedEnd):
        return ChannelClosedError(f"channel {channel_id} was closed by this end", **kw)
    if code == ChannelCloseCode.EXPIRED:
        return ChannelExpiredError(f"channel {channel_id} expired: the other end never connected{detail}", **kw)
    if code == ChannelCloseCode.IN_USE:
        return ChannelInUseError(f"channel {channel_id}: the {side} end is already attached{detail}", **kw)
    if side == "read":
        if code in EOF_CODES:
            return None
        if code == ChannelCloseCode.WRITER_ABORTED:
            return ChannelAbortedError(f"channel {channel_id}: the writer aborted{detail}", **kw)
    else:
        if code == ChannelCloseCode.READER_GONE or code is None:
            how = "closed the channel" if code is not None else "dropped the connection (reader gone or engine down)"
            return ReaderGoneError(f"channel {channel_id}: the engine {how} before the end{detail}", **kw)
        if code in EOF_CODES:
            return ReaderGoneError(f"channel {channel_id}: the engine ended the writer early{detail}", **kw)
    if code is None:
        return ChannelConnectionError(f"channel {channel_id}: connection lost without a close frame", **kw)
    return ChannelConnectionError(f"channel {channel_id}: closed abnormally with code {code}{detail}", **kw)


class _Home:
    """The one event loop a channel end belongs to, and how its sync calls reach it (module docstring, "Event
    loops").

    An end is bound to the first loop that uses it: async code binds it to its running loop (:meth:`bind`); a sync
    call where no loop runs (:meth:`run`) binds it to a private loop of its own, created then, run in the calling
    thread for each such call and closed by :meth:`release` once the end is done. The private loop is what the
    reference's ``asyncio.run`` per call lacked: the socket one call opens is still on a live loop at the next.

    Example:
        >>> home = _Home("c1", "writer")
        >>> async def where() -> bool:
        ...     return asyncio.get_running_loop() is home.loop
        >>> home.run(where), home.run(where)  # the same private loop for both calls
        (True, True)
        >>> home.release(); home.loop.is_closed()
        True
    """

    __slots__ = ("_bind_lock", "_private", "_run_lock", "channel_id", "end", "lock", "loop", "side")

    def __init__(self, channel_id: str, side: Literal["reader", "writer"]) -> None:
        self.channel_id = channel_id
        self.side = side
        self.loop: asyncio.AbstractEventLoop | None = None
        self._private: asyncio.AbstractEventLoop | None = None
        self._bind_lock = threading.Lock()  # held only to set ``loop``: never while a loop runs
        self._run_lock = threading.Lock()  # around each run of the private loop: it runs in one thread at a time
        self.end: WebSocketEnd | None = None  # the end's socket, for :meth:`abandon` (which cannot reach the end)
        # The end's lock on its loop (the writer's sends), renewed by :meth:`bind` when the end moves: one that
        # ever waited is bound to the loop the end left.
        self.lock = asyncio.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop, held: Callable[[], str] | None = None) -> None:
        """Bind to ``loop``, the loop running this call, or raise :class:`ChannelLoopError` if the end belongs to
        another one.

        ``held()`` says what the end has on its loop ("" for nothing: no socket, no call under way; ``None``
        stands for "its socket"). An end that has nothing there moves to ``loop`` when its loop is closed or not
        running (a recv cancelled before it connected, under an ``asyncio.run`` that returned): nothing went with
        that loop."""
        if self.loop is loop:
            return
        with self._bind_lock:
            old = self.loop
            if old is None:
                self.loop = loop
                return
            what = "its socket" if held is None else held()
            if not what and not old.is_running() and self._leave(old):
                self.loop = loop
                self.lock = asyncio.Lock()
                return
        if old.is_closed():
            raise self._gone(what or "a sync call under way")
        raise self._error("was called from an event loop other than the one it belongs to (the first loop that "
                          "used it: its socket and tasks live there); await it on that loop, or call its sync "
                          "methods from a thread with no loop running")

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``work()`` run to its end for a sync call made where no loop runs in this thread (see the class)."""
        with self._bind_lock:
            if self.loop is None:
                self.loop = self._private = asyncio.new_event_loop()
        loop = self.loop
        if loop is self._private:
            with self._run_lock:
                return self._run_private(loop, work)
        if loop.is_closed():
            raise self._gone()
        if not loop.is_running():
            raise self._error("belongs to an event loop that is not running: a sync call can only run on it "
                              "while it runs in another thread")
        coro = work()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # closed since the check above
            coro.close()
            raise self._gone() from None
        try:
            return self._result_while_running(loop, future)
        except concurrent.futures.CancelledError as exc:
            raise self._error("had this call cancelled on the event loop it belongs to (that loop shutting "
                              "down?)") from exc

    def _result_while_running(self, loop: asyncio.AbstractEventLoop, future: concurrent.futures.Future[T]) -> T:
        """The call's outcome, waited for in slices: a loop stopped or closed without cancelling its tasks (as the
        SDK client's shutdown leaves it) never settles the call, whose caller then waited for good and kept the
        process from exiting. A ``KeyboardInterrupt`` (any ``BaseException``) here cancels the call on its loop, so
        a write cut off part-way aborts the stream there too (it went on without its caller, and a retry sent the
        bytes twice)."""
        try:
            while True:
                try:
                    return future.result(timeout=_LOOP_CHECK_S)
                except TimeoutError:
                    if not loop.is_closed() and loop.is_running():
                        continue
                    _cancel_on(loop, future)
                    raise self._error("lost the event loop it belongs to during this call (stopped or closed "
                                      "before the call ended): what it wrote may be incomplete") from None
        except BaseException:
            _cancel_on(loop, future)  # the task on the loop is cancelled: a write cut off part-way aborts there
            raise

    def run_elsewhere(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
        """``work()`` run to its end on this end's loop, from a thread where no loop runs, within ``timeout``
        seconds (:class:`TimeoutError` past it; the work is cancelled then), whatever that loop is doing.

        Unlike :meth:`run`, which is a sync call's, this never waits on a sync call running the private loop in
        another thread: the work is handed to that call's running loop (an abort then cuts that call's write
        short). Raises :class:`ChannelLoopError` if the loop is closed, or neither private nor running (nobody
        could run the work on it), or if the work was cancelled there part-way (the sync call that ran it ended
        and closed the private loop, cancelling what was left on it)."""
        loop = self.loop
        if loop is None:
            raise self._error("has no event loop yet")
        deadline = time.monotonic() + timeout
        handed: _Handover[T] | None = None
        stopped_at: float | None = None  # when the loop was first seen stopped with the work handed to it
        try:
            while True:
                if handed is not None:
                    with contextlib.suppress(TimeoutError):
                        wait = min(_LOOP_CHECK_S, max(0.0, deadline - time.monotonic()))
                        return handed.future.result(timeout=wait)
                if loop is self._private and self._run_lock.acquire(timeout=0 if handed else _LOOP_CHECK_S):
                    # the private loop is free: run the work here (or what is left of one handed to a sync call
                    # whose loop stopped before running it)
                    try:
                        if loop.is_closed():
                            raise self._gone()
                        if handed is None:
                            return self._run_private(loop, work)
                        return loop.run_until_complete(asyncio.wrap_future(handed.future, loop=loop))
                    finally:
                        self._run_lock.release()
                if loop.is_closed():
                    raise self._gone()
                if handed is None and loop.is_running():
                    try:
                        handed = _Handover(loop, work)
                    except RuntimeError:  # closed since the check above
                        raise self._gone() from None
                elif handed is None and loop is not self._private:
                    raise self._error("belongs to an event loop that is not running: nothing can run this there")
                elif handed is not None and loop is not self._private:
                    # Stopped by its owner with the work handed to it (not held: a held loop still runs): it may
                    # never run again, and nothing else can run it, so this does not wait out the deadline for it.
                    if loop.is_running():
                        stopped_at = None
                    elif stopped_at is None:
                        stopped_at = time.monotonic()
                    elif time.monotonic() - stopped_at >= _LOOP_CHECK_S:
                        raise self._error("had its event loop stopped before it carried this out")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"channel {self.channel_id} {self.side}: its event loop did not carry this "
                                       f"out within {timeout:g} s")
        except concurrent.futures.CancelledError as exc:
            # Not the caller's cancellation (no task runs here): the concurrent.futures one, an Exception that no
            # caller of this expects.
            raise self._error("had this call cancelled part-way on the event loop it belongs to (the sync call "
                              "running that loop ended and closed it)") from exc
        except BaseException:
            if handed is not None:
                handed.give_up()
            raise

    def _run_private(self, loop: asyncio.AbstractEventLoop, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if loop.is_closed():
            raise ChannelClosedError(f"channel {self.channel_id} {self.side} is closed", channel_id=self.channel_id)
        task = loop.create_task(work())
        try:
            return loop.run_until_complete(task)
        finally:
            if not task.done():
                # KeyboardInterrupt (or SystemExit) out of the loop: the call ends with it, as in asyncio.run,
                # instead of going on at the next sync call.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    loop.run_until_complete(task)

    def release(self, timeout: float | None = None) -> None:
        """Close the private loop, if any (the end is done): what is left on it is cancelled first. With
        ``timeout``: not if a sync call keeps the loop that long (that call releases it as it ends)."""
        if not self._run_lock.acquire(timeout=-1 if timeout is None else timeout):
            return
        try:
            loop = self._private
            if loop is not None and not loop.is_closed():
                self._close_private(loop)
        finally:
            self._run_lock.release()

    def _close_private(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the private loop (the run lock held): what is left on it is cancelled first, then the end's
        socket, if still open, is dropped. (An abort from another loop, handed to a sync write running this loop,
        had its close handshake cancelled here as that write ended: its socket stayed open, with the loop closed
        no one could close it, until it was collected.)"""
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            # Only an end of this loop: an end that left it (for a loop of its own, with nothing here) may have a
            # socket on its new loop by the time this runs in a thread of its own (_leave).
            end = self.end if self.loop is loop else None
            if end is not None:
                with contextlib.suppress(Exception):
                    end.abort()  # a no-op on a connection closed already; else closed as the loop runs below
            loop.run_until_complete(loop.shutdown_asyncgens())
            # The connect's getaddrinfo may have started the loop's default executor: its threads end here. That
            # shutdown starts a thread, which Python 3.12+ refuses at the interpreter's exit (an end left unclosed,
            # abandoned then; sys.is_finalizing() is still False there): the executor's threads were joined by
            # then, and loop.close() below drops it without a thread.
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def abandon(self) -> None:
        """The end was collected without being closed (its ``weakref.finalize``): drop its socket, if still open,
        with a :class:`ResourceWarning` (as asyncio's transports warn of theirs), and close the private loop, if it
        has one, which it kept until now (asyncio's "unclosed event loop" and socket ResourceWarnings). The engine
        sees the connection drop, not an end of stream: ours takes it as the writer aborting (its reader gets
        :class:`ChannelAbortedError`), or the reader leaving (its writer :class:`ReaderGoneError`). The production
        engine (and ours in ``production_mode``) cannot relay an abort: there a dropped writer's reader sees a
        clean end of a short stream, as for any abort (an integrity trailer, ``iii_channels``, tells). Before, an
        end on a loop of the caller's kept its socket, attached, until that loop's transports went (a connect its
        cancelled read or write left going on included): the other end waited for good.

        Collected on any thread: on a loop of the caller's, still running, the socket is dropped there (its
        transport is that loop's); on one that is not running, shut down from here (the peer sees it now, the
        descriptor goes when that loop runs again or is collected). A loop cannot run where another one runs:
        collected there (a garbage collection on any running loop), the private loop is closed in a thread of its
        own. A sync call running the private loop in another thread is left alone: at the interpreter's exit
        ``weakref.finalize`` calls this for every end still alive, and a wait for a call stuck in a daemon thread
        (a write to a full channel) kept the process from exiting.
        """
        end = self.end
        unclosed = end is not None and end.is_open
        try:
            loop = self._private
            if loop is None or loop.is_closed() or self.loop is not loop:
                if end is not None and unclosed:
                    _drop_on(self.loop, end)
            elif _running_loop() is not None:
                threading.Thread(target=self._abandon_private, name=f"iii-channel-{self.side}-release",
                                 daemon=True).start()
            else:
                self._abandon_private()
        finally:  # after the drop: a warning filter that raises (-W error) must not keep the socket open
            if unclosed:
                warnings.warn(f"unclosed channel {self.side} {self.channel_id}: its connection was dropped as it "
                              "was collected (close it, or use it in an async with)", ResourceWarning, stacklevel=2)

    def _abandon_private(self) -> None:
        loop = self._private
        if loop is None or not self._run_lock.acquire(blocking=False):
            return
        try:
            if loop.is_closed():
                return
            end = self.end
            if end is not None:
                with contextlib.suppress(Exception):
                    end.abort()  # its socket is closed as the loop runs below
            self._close_private(loop)
        finally:
            self._run_lock.release()

    def _leave(self, old: asyncio.AbstractEventLoop) -> bool:
        """Whether the end can leave ``old``, a loop not running now: the private loop is closed then, unless a
        sync call is about to run it. (A loop runs here, so the private one cannot: with nothing left on it, it
        is closed as it is; otherwise in a thread of its own.)"""
        if old is not self._private or old.is_closed():
            return True
        if not self._run_lock.acquire(blocking=False):
            return False
        try:
            if not asyncio.all_tasks(old):
                old.close()  # its default executor's threads, if any, end on their own (no wait)
                return True
        finally:
            self._run_lock.release()
        threading.Thread(target=self.release, name=f"iii-channel-{self.side}-release", daemon=True).start()
        return True

    def _gone(self, what: str = "its socket") -> ChannelLoopError:
        return self._error(f"belongs to an event loop that is closed now (an asyncio.run() that returned?): {what} "
                           "went with that loop; use a channel end within one loop, or only from sync code")

    def _error(self, what: str) -> ChannelLoopError:
        return ChannelLoopError(f"channel {self.channel_id} {self.side} {what}", channel_id=self.channel_id)


def _cancel_on(loop: asyncio.AbstractEventLoop, future: concurrent.futures.Future[Any]) -> None:
    """Cancel a call handed to ``loop`` (a no-op once it is done); not on a closed loop, where its cancel could not
    be delivered (asyncio logs the RuntimeError of that hand-over as a traceback)."""
    if not loop.is_closed():
        future.cancel()


class _Handover(Generic[T]):
    """``work()`` handed to ``loop``, running in another thread, as ``asyncio.run_coroutine_threadsafe`` does, but
    one that can be given up for good (:meth:`give_up`): the caller that stops waiting for it has settled its
    outcome otherwise (dropped the connection). Handed over with ``run_coroutine_threadsafe``, work given up while
    its loop was held still started once that loop ran again, and a loop stopped then and closed left its task
    pending ("Task was destroyed but it is pending").

    Example:
        >>> loop = asyncio.new_event_loop()
        >>> async def answer() -> int:
        ...     return 42
        >>> handed = _Handover(loop, answer)
        >>> handed.give_up()  # before the loop got to it: never started
        >>> loop.run_until_complete(asyncio.sleep(0)); handed.future.cancelled(), asyncio.all_tasks(loop)
        (True, set())
        >>> loop.close()
    """

    __slots__ = ("_coro", "_given_up", "_lock", "_started", "future", "loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, work: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self.loop = loop
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.task: asyncio.Task[T] | None = None
        self._coro: Coroutine[Any, Any, T] | None = None
        self._given_up = False
        self._started = False
        self._lock = threading.Lock()  # between the loop's steps of the work and a give-up in another thread
        loop.call_soon_threadsafe(self._start, work)  # RuntimeError on a closed loop

    def _start(self, work: Callable[[], Coroutine[Any, Any, T]]) -> None:
        with self._lock:
            if self._given_up:
                return
            self._coro = coro = self._run(work)
        # Outside the lock: an eager task factory (Python 3.12+) runs the first step, and so _run's lock, inside
        # create_task, and the loop thread would wait on itself. A give-up in between closes the coroutine: the task
        # then ends at its first step (its error retrieved by _settle; nobody waits for it any more).
        task = self.loop.create_task(coro)
        with self._lock:
            self.task = task
            cancel = self._given_up and self._started and not task.done()
        task.add_done_callback(self._settle)
        if cancel:
            task.cancel()  # given up while its first step ran (eagerly): cancelled here, as give_up would

    async def _run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        with self._lock:
            if self._given_up:
                raise asyncio.CancelledError
            self._started = True
        return await work()

    def _settle(self, task: asyncio.Task[T]) -> None:
        exc = None if task.cancelled() else task.exception()  # retrieved even when nobody waits any more
        if self.future.done():
            return
        if task.cancelled():
            self.future.cancel()
        elif exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(task.result())

    def give_up(self) -> None:
        """Stop waiting for the work: not started yet, it never starts (its coroutine is closed here, if its task
        was made); started, it is cancelled when its loop runs again. Its task, if its loop is closed without
        running it again, goes without asyncio's "destroyed but it is pending" error, as ``run_until_complete``
        leaves a task its stopped loop did not finish."""
        with self._lock:
            self._given_up = True
            task, coro = self.task, self._coro
            if coro is not None and not self._started:
                # Never stepped: ended here ("never awaited" otherwise). A loop stepping it right now waits on the
                # lock inside it (ValueError: executing), and sees the give-up then.
                with contextlib.suppress(ValueError):
                    coro.close()
        self.future.cancel()
        if task is None or task.done():
            return
        with contextlib.suppress(AttributeError):  # asyncio's own switch, on both Tasks (3.11-3.13); else the warning
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing can run the task any more
            self.loop.call_soon_threadsafe(task.cancel)


# ---------------------------------------------------------------------------------------------------- writer


class WritableStream:
    """Sync, Node-like writable view of a :class:`ChannelWriter` (``writer.stream``).

    ``write`` queues the bytes in order and returns ``False`` once more than ``high_water_mark`` bytes are
    queued; ``await drain()`` waits until the queue is back under it. ``end`` closes after every queued write.
    Where no event loop runs, ``write`` and ``end`` block until their bytes are written out (``write`` then returns
    ``True``) and raise the writer's errors; any sequence of them works (module docstring, "Event loops").

    Example:
        >>> async def produce(writer: ChannelWriter) -> None:
        ...     for block in (b"a" * 10, b"b" * 10):
        ...         if not writer.stream.write(block):
        ...             await writer.stream.drain()
        ...     writer.stream.end()
    """

    def __init__(self, writer: ChannelWriter, high_water_mark: int = DEFAULT_HIGH_WATER_MARK) -> None:
        self._writer = writer
        self.high_water_mark = high_water_mark

    def write(self, data: bytes | bytearray | memoryview | str) -> bool:
        """Queue ``data``; ``False`` means "wait for :meth:`drain` before writing more". A str goes out as text,
        as the reference's ``write`` sends it: in messages of at most 65,536 characters
        (:data:`TEXT_PIECE_CHARS`), so a longer str arrives as several text messages, one after the other;
        bytes-like data as binary frames. The queue counts a str's UTF-8 bytes. Anything else raises
        :class:`TypeError`, a str that is not UTF-8-encodable :class:`UnicodeEncodeError`, before anything is
        queued; after :meth:`end` (or the writer's close) this raises :class:`ChannelClosedError`."""
        writer = self._writer
        payload = _payload(data, "WritableStream.write", TEXT_PIECE_CHARS)
        loop = _running_loop()
        if loop is None:
            writer._check_open()
            writer._run_sync(lambda: writer._write_out(payload))
            return True
        writer._check_open()  # closed: that, not "another loop" (bind's error), from any loop
        writer._home.bind(loop, writer._held)
        writer._enqueue(payload)
        return writer.pending_bytes < self.high_water_mark

    def end(self, data: bytes | bytearray | memoryview | str | None = None) -> None:
        """Queue optional final ``data`` (a str: text, as in :meth:`write`), then close once everything queued was
        sent. Final data after the writer was closed raises :class:`ChannelClosedError`."""
        writer = self._writer
        payload = None if data is None else _payload(data, "WritableStream.end", TEXT_PIECE_CHARS)
        loop = _running_loop()
        if loop is None:
            if payload is None:
                writer.close()
                return
            writer._check_open()
            writer._run_sync(lambda: self._end_async(payload))
            return
        if payload is not None:
            writer._check_open()  # as in write: closed is the error, from any loop
            writer._home.bind(loop, writer._held)
            writer._enqueue(payload)
        writer.close()

    async def _end_async(self, data: bytes | _Text) -> None:
        await self._writer._write_out(data)
        await self._writer.close_async()

    async def drain(self) -> None:
        """Wait until fewer than ``high_water_mark`` bytes are queued (ours; raises the writer's error). Several
        tasks may wait at once (producers sharing the stream): all of them go on once below the mark."""
        self._writer._home.bind(asyncio.get_running_loop(), self._writer._held)
        await self._writer._wait_pending_below(self.high_water_mark)


class ChannelWriter:
    """The writing end of a channel: binary ``write`` and text ``send_message``, then ``close``.

    Connects lazily on first use. ``async with writer:`` closes on success and aborts on an exception (ours).
    The sync methods (``send_message``, ``close``, ``stream``) work in any sequence from code with no running loop
    (module docstring, "Event loops").

    Example:
        >>> async def send(writer: ChannelWriter, data: bytes) -> None:
        ...     async with writer:
        ...         await writer.send_message_async('{"name": "report.csv"}')
        ...         await writer.write(data)
    """

    def __init__(self, engine_ws_base: str, ref: StreamChannelRef | dict[str, Any]) -> None:
        self.ref = _as_ref(ref)
        self._channel_id = self.ref.channel_id
        self._url = build_channel_url(engine_ws_base, self.ref.channel_id, self.ref.access_key, "write")
        self._end: WebSocketEnd | None = None
        # The one connect of this writer, shared: an abort() while a write connects closes that write's socket (with
        # a socket of its own, refused as a second writer, the abort was lost, the write went through, and the
        # reader waited for an end that never came).
        self._connect = _SharedConnect(self._url, self._channel_id, False, self._connected)
        self._queue: deque[tuple[bytes | _Text, asyncio.Future[None] | None]] = deque()
        self._pending_bytes = 0
        self._pump: asyncio.Task[None] | None = None
        # Set whenever pending bytes drop or an error arrives: every task in WritableStream.drain re-checks (several
        # producers may wait on one stream, as in Node).
        self._space = Broadcast()
        self._error: BaseException | None = None
        self._closing: asyncio.Future[None] | None = None
        self._aborting: asyncio.Future[None] | None = None  # an abort under way that no caller waits for
        self._closed = False
        self._stopped_by = ""  # see _aborted_error
        self._home = _Home(self._channel_id, "writer")
        # A writer left unclosed keeps its private loop (sync use) and socket until it is collected: then they go.
        weakref.finalize(self, self._home.abandon)
        self.bytes_written = 0
        self._turn = 0.0  # when a write last gave the loop a turn (time.monotonic)
        self.stream = WritableStream(self)

    # ---- public API

    @property
    def closed(self) -> bool:
        """Whether ``close``/``abort`` was called."""
        return self._closed

    @property
    def pending_bytes(self) -> int:
        """Bytes queued by the sync API and not yet handed to the socket."""
        return self._pending_bytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes sent that this writer's connection still holds, not yet taken by its socket (0 when not
        connected): they shrink as the peer takes them, even in the middle of a long write. With
        :attr:`bytes_written`, a mark of whether an upload moves (ours).

        Example:
            >>> writer = ChannelWriter("ws://localhost:49134/", {"channel_id": "c1", "access_key": "k",
            ...                                                  "direction": "write"})
            >>> writer.buffered_bytes, writer.bytes_written  # not connected yet
            (0, 0)
        """
        end = self._end
        return 0 if end is None else ws_fastpath.write_buffer_size(end.ws)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as binary frames (65 536 bytes, or what the engine invites), after anything queued before
        it. Empty ``data`` sends nothing (the reference sends an empty frame; our readers skip those).

        A str is sent as text, as the reference's ``write`` (annotated ``bytes``, as this one is, for typed code's
        sake) sends it: in pieces of at most 65,536 characters (:data:`TEXT_PIECE_CHARS`), each a text message of
        its own, so a longer str arrives as several messages, in order, with no other write between them. (Its
        reader keeps websockets' 1 MiB limit on a message: one larger message ended its stream early, silently.)
        Use :meth:`send_message_async` for one message, never cut. A str that is not UTF-8-encodable (a lone
        surrogate) raises :class:`UnicodeEncodeError` before anything is queued or connected; the writer goes on.

        Cancelled while its frames go out, a write of more than one frame aborts the stream (some of its frames
        may be on their way: a close would hand the reader a short stream as a whole one); the writer raises
        :class:`ChannelClosedError` from then on. Cancelled before its first frame went out (waiting for the
        writes ahead of it, queued ones included, or to connect), nothing of it is sent, then or later, and the
        writer goes on: a retry sends it once. A write queued behind others is sent by the writer's queue: if
        it is cancelled once its frames started, they all go out and then the stream is aborted all the same,
        even for one frame, and even when the cancel reaches it only after they all went out (the queue done
        with it, its caller not yet resumed): its caller, told it was cancelled, must not send it again into a
        stream that goes on. A direct write of one frame cancelled as it goes out may have been sent.

        ``data`` that is neither bytes-like nor a str (an int, a list) raises :class:`TypeError` before anything
        is queued or connected; the writer goes on.
        """
        if isinstance(data, str):  # untyped drop-in code of the reference's
            await self._write_text(_text_payload(data, "ChannelWriter.write", TEXT_PIECE_CHARS),
                                   "a write of text was cancelled part-way")
            return
        await self._write(data, "a write was cancelled part-way")

    async def _write(self, data: bytes | bytearray | memoryview, cut_off: str | None) -> None:
        if type(data) is not bytes:
            # Refused before anything happens: queued, bytes(5) went out as five zero bytes.
            data = binary_view(data, "ChannelWriter.write", None)
        self._check_open()
        if self._home.loop is not _running_loop():
            self._home.bind(asyncio.get_running_loop(), self._held)
        if self._queue or self._pump is not None:
            await self._enqueue_and_wait(bytes(data))
        else:
            await self._send(data, cut_off)

    def send_message(self, msg: str) -> None:
        """Queue a text message (fire-and-forget; ordered with every other write; never cut). Where no loop runs:
        sent before it returns. A str that is not UTF-8-encodable raises :class:`UnicodeEncodeError` at once."""
        payload = _payload(msg, "ChannelWriter.send_message", None)
        self._check_open()
        loop = _running_loop()
        if loop is None:
            self._run_sync(lambda: self._write_out(payload))
            return
        self._home.bind(loop, self._held)
        self._enqueue(payload)

    async def send_message_async(self, msg: str) -> None:
        """Send a text message (never split) after anything queued before it. A str that is not UTF-8-encodable
        raises :class:`UnicodeEncodeError` before anything is queued or connected."""
        payload = _payload(msg, "ChannelWriter.send_message_async", None)
        if isinstance(payload, _Text):
            await self._write_text(payload, None)
        else:
            await self._write(payload, "a write was cancelled part-way")

    async def _write_text(self, text: _Text, cut_off: str | None) -> None:
        self._check_open()
        if self._home.loop is not _running_loop():
            self._home.bind(asyncio.get_running_loop(), self._held)
        if self._queue or self._pump is not None:
            await self._enqueue_and_wait(text)
        else:
            await self._send(text, cut_off)

    def close(self) -> None:
        """Close after every queued write (fire-and-forget; errors are logged). Where no loop runs: closed when it
        returns, raising if the stream did not get through."""
        loop = _running_loop()
        if loop is None:
            closing = self._closing
            if closing is not None and closing.done():
                closing.result()  # closed already (its loop may be gone): the outcome again, as close_async does
                return
            if closing is None and self._closed and self._error is not None:
                raise self._error  # aborted (maybe from another loop, its private loop closed since)
            try:
                self._run_sync(self.close_async)
            except ChannelClosedError:
                # Another thread's close won the race and released the private loop meanwhile: its outcome is ours.
                closing = self._closing
                if closing is None or not closing.done():
                    raise
                closing.result()
            return
        if self._home.loop is not loop and self._done_with_its_loop():
            if self._closing is None:
                _log_task_error(self._close_aborted(loop))
            return
        self._home.bind(loop, self._held)
        if self._closing is None:
            self._closed = True
            self._closing = loop.create_task(self._close_impl())
            self._closing.add_done_callback(self._close_ended)
            self._closing.add_done_callback(_log_task_error)

    async def close_async(self) -> None:
        """Send end-of-stream once every queued write was sent; raises if the stream did not get through."""
        closing = self._closing
        if closing is not None and closing.done():
            closing.result()
            return
        loop = asyncio.get_running_loop()
        if self._home.loop is not loop and self._done_with_its_loop():
            # Aborted (a writer whose close is over was answered above): raises here what it raises there.
            self._close_aborted(loop).result()
            return
        self._home.bind(loop, self._held)
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._close_impl())
            self._closing.add_done_callback(self._close_ended)
        await asyncio.shield(self._closing)

    async def abort(self, reason: str = "") -> None:
        """Abort the stream (ours): queued writes are dropped and the reader gets :class:`ChannelAbortedError`.

        Against the production engine an abort looks like end-of-stream to the reader; use an integrity trailer
        (``iii_channels``) to detect it there.

        From any event loop, and never raises: awaited on a loop the writer does not belong to, the writer is
        aborted at once (any later write or close raises) and the abort is carried out on the writer's own loop
        (its private loop, or its loop running in another thread; bounded). If that loop is closed, or stopped
        (for 0.25 s) before it ran the abort, the socket is dropped instead: the reader sees an abnormal close, an
        abort too (a stopped loop may never run again, and no other thread may run it). If that loop
        does not get to the abort at once (held by a sync call, or stuck), this returns without waiting for it:
        the abort is carried out when the loop runs again, or the socket dropped if it does not within 15 s.
        """
        closing = self._closing
        if closing is None or not closing.done():  # after the close there is nothing left to abort, on any loop
            try:
                self._home.bind(asyncio.get_running_loop(), self._held)
            except ChannelLoopError:
                await self._abort_elsewhere(reason)
                return
        await self._abort_here(reason)

    async def _abort_here(self, reason: str) -> None:
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
        self._fail_queue(self._aborted_error())
        end = self._end
        try:
            if end is None:
                end = await self._ensure_connected()
            try:
                async with asyncio.timeout(_ABORT_CLOSE_S):
                    await end.aclose(ChannelCloseCode.WRITER_ABORTED, reason or "aborted by writer")
            except TimeoutError:
                log.debug("abort of channel %s: %s; connection dropped", self._channel_id, _close_stuck(end))
                end.abort()
        except ChannelError as exc:
            log.debug("abort of channel %s: %s", self._channel_id, exc)

    async def _abort_cut_off(self, what: str) -> None:
        """Abort the stream as a write cut off part-way returns: the writer fails at once (a later write or close
        raises), and the abort goes on if its caller is cancelled again."""
        self._closed = True
        if self._error is None:
            self._error = ChannelClosedError(f"channel {self._channel_id} aborted", channel_id=self._channel_id)
        if self._pump is asyncio.current_task():
            # The queue's pump cut off (by its loop's end: an asyncio.run that returns cancels it once): the abort
            # must not cancel it again, its wait below is what keeps that loop running until the abort is out.
            self._pump = None
        self._aborting = asyncio.ensure_future(self._abort_here(what))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._aborting)

    async def _abort_elsewhere(self, reason: str) -> None:
        """abort() awaited on a loop this writer does not belong to (a writer used from sync code, then in an
        ``async with`` whose body raised): a ChannelLoopError there lost the abort, and a later close delivered
        the bytes written so far to the reader as a whole stream."""
        handed = self.abort_soon(reason)
        if handed is None:
            return
        started, finished = handed
        done = asyncio.shield(asyncio.wrap_future(finished))  # a cancelled caller leaves the abort going on
        await asyncio.wait((asyncio.wrap_future(started), done), timeout=_ABORT_START_WAIT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        if started.done() or finished.done():  # its loop runs it (bounded, see _ABORT_ELSEWHERE_S): waited for
            await done

    def abort_soon(self, reason: str = "") -> tuple[concurrent.futures.Future[None],
                                                    concurrent.futures.Future[None]] | None:
        """Abort from any thread, without waiting (ours; :meth:`abort` waits): the writer fails at once (a write
        under way or later raises :class:`ChannelClosedError`) and the abort, with ``reason`` for the reader, is
        carried out on its own loop by a thread of its own, as :meth:`abort` from another loop does. Returns that
        abort's ``(started, finished)`` futures, or ``None`` when no thread could be started (the connection is
        dropped from here then). Never raises.

        Example:
            >>> writer = ChannelWriter("ws://127.0.0.1:1/", {"channel_id": "c1", "access_key": "k",
            ...                                              "direction": "write"})
            >>> _ = writer.abort_soon("no longer wanted")
            >>> writer.stream.write(b"x")
            Traceback (most recent call last):
            ...
            iii.channels.ChannelClosedError: channel c1 aborted
        """
        self._closed = True  # at once, from here: no later write or close can deliver
        if self._error is None:
            self._error = self._aborted_error()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        finished: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def abort_there() -> None:
            started.set_result(None)
            await self._abort_here(reason)

        # A thread of its own, not the caller's executor: asyncio.run's end waits for that executor's threads, so a
        # caller that returned below was held there instead.
        try:
            threading.Thread(target=self._abort_from_thread, args=(abort_there, finished),
                             name=f"iii-channel-writer-abort-{self._channel_id}", daemon=True).start()
        except RuntimeError as exc:  # no thread now: at the interpreter's exit (3.12+), or the process's limit
            log.debug("abort of channel %s: no thread to carry it out (%s); connection dropped", self._channel_id,
                      exc)
            with contextlib.suppress(Exception):  # abort() never raises: the reader sees the drop
                _drop_connection(self._end)
            return None
        return started, finished

    def _abort_from_thread(self, abort_there: Callable[[], Coroutine[Any, Any, None]],
                           finished: concurrent.futures.Future[None]) -> None:
        try:
            self._home.run_elsewhere(abort_there, _ABORT_ELSEWHERE_S)
        except (ChannelLoopError, TimeoutError) as exc:
            # Nobody runs the writer's loop (closed: an asyncio.run that returned), it did not get to the abort, or
            # the sync call running it closed it with the abort part-way: drop the TCP connection from here, which
            # the engine takes as an abort too.
            log.debug("abort of channel %s: %s; connection dropped", self._channel_id, exc)
            try:
                _drop_connection(self._end)
            except Exception as drop_exc:  # abort() never raises: the reader sees the drop, or the attach deadline
                log.debug("abort of channel %s: dropping the connection failed: %r", self._channel_id, drop_exc)
        finally:
            self._home.release(timeout=0)  # a sync call still running the private loop releases it as it ends
            finished.set_result(None)

    def __iii_json__(self) -> dict[str, Any]:
        """The ref, so a writer placed in a payload travels as plain JSON (S11)."""
        return self.ref.model_dump()

    async def __aenter__(self) -> ChannelWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.close_async()
        else:
            await self.abort(f"{exc_type.__name__ if exc_type else 'error'}: {exc}")

    # ---- internals

    def _held(self) -> str:
        """What this writer has on its loop ("" for nothing: it can move to another, see :meth:`_Home.bind`)."""
        if self._end is not None:
            return "its socket"
        if (self._connect.under_way or self._home.lock.locked() or self._queue or self._pump is not None
                or self._closing is not None or self._aborting is not None):
            return "a call under way"
        return ""

    def _done_with_its_loop(self) -> bool:
        """Whether this writer is closed and has nothing left on its event loop: its close is over, or it was
        aborted and its socket is closed, with no call under way. A close of it has nothing to do there then, and
        is answered on any loop as on its own (:class:`ChannelLoopError` named a fault it did not have)."""
        closing = self._closing
        if closing is not None:
            return closing.done()
        end, aborting = self._end, self._aborting
        return (self._closed and self._error is not None and (end is None or not end.is_open)
                and (aborting is None or aborting.done()) and self._pump is None and not self._connect.under_way
                and not self._home.lock.locked())

    def _close_aborted(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """The close of this writer, aborted and done with its loop (:meth:`_done_with_its_loop`), settled on
        ``loop``, any loop: failed with the abort's error, as a close on its own loop fails at once (no socket or
        task of that loop is touched)."""
        assert self._error is not None
        self._closed = True
        closing = self._closing = loop.create_future()
        closing.set_exception(self._error)
        return closing

    def _aborted_error(self) -> ChannelClosedError:
        """The error of writes and closes after an abort, naming who stopped the writer if not its user (a
        client's shutdown: :meth:`LiveEnds.stop_all`)."""
        why = f": {self._stopped_by}" if self._stopped_by else ""
        return ChannelClosedError(f"channel {self._channel_id} aborted{why}", channel_id=self._channel_id)

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ChannelClosedError(f"channel {self._channel_id} writer is closed", channel_id=self._channel_id)

    def _run_sync(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A sync call made where no loop runs: ``work()`` on the writer's loop (:class:`_Home`); the private
        loop, if that is it, goes once the writer is closed."""
        try:
            self._home.run(work)
        finally:
            closing = self._closing
            if (closing.done() if closing is not None else self._closed):  # closed, or aborted
                self._home.release()

    async def _write_out(self, data: bytes | _Text) -> None:
        """A sync call's write: sent, and out of the transport's buffer before the call returns (until the next
        sync call no loop runs to write out what the transport kept)."""
        try:
            if isinstance(data, _Text):
                await self._write_text(data, None)  # cut off, it is aborted below
            else:
                await self._write(data, None)  # cut off, it is aborted below
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            # Interrupted part-way (Ctrl-C, or the end's loop shutting down): what went out is a short stream, and
            # a close after it would hand it to the reader as a whole one. A Ctrl-C raised in this task's own step
            # (masking a frame) is no cancel: asyncio ends the task with it, and nothing was aborted.
            await self.abort("a sync write was interrupted")
            raise
        end = self._end
        if end is not None:
            await end.drain()

    async def _ensure_connected(self) -> WebSocketEnd:
        end = self._end
        return end if end is not None else await self._connect.wait()

    def _connected(self, end: WebSocketEnd) -> None:
        if self._end is None:
            self._end = self._home.end = end
        closing = self._closing
        if ((self._closed or self._error is not None) and not self._connect.waited_for
                and (closing is None or closing.done()) and end.is_open):
            # Aborted (or failed) while a connect its cancelled caller left went on, and no close or abort waits
            # for it now: kept, the socket stayed attached with nothing to end it and the reader waited for good.
            # Dropped, the reader sees an abort.
            end.abort()

    async def _send(self, data: bytes | bytearray | memoryview | _Text, cut_off: str | None = None,
                    waiter: asyncio.Future[None] | None = None) -> None:
        """One write's frames; cancelled part-way, the stream is aborted with ``cut_off`` as its reason, unless
        it failed already (an abort cancels the queue's pump; a sync call's write, passing none, aborts with its
        own reason). ``waiter``: the future a queued write's caller awaits (the pump sends it): cancelled before
        its first frame, nothing is sent; cancelled while its frames go out, they go out whole and the stream is
        aborted as a direct write's would be."""
        # One lock around connect + all frames of one write, so concurrent writers never interleave frames.
        async with self._home.lock:
            if self._error is not None:
                raise self._error
            if not isinstance(data, _Text) and not (data.nbytes if isinstance(data, memoryview) else len(data)):
                # Nothing to send. An empty frame reached a reference reader as an empty chunk, and b"" is what
                # many read loops take for the end of the stream.
                return
            end = await self._ensure_connected()
            now = time.monotonic()
            if now - self._turn >= ws_fastpath.YIELD_EVERY_S:
                # The loop's turn, before any of this write goes out (a cancel here sends nothing): a socket that
                # keeps up never makes a write wait, and a writer looping on writes kept its loop from all else,
                # the reader's leaving included (see YIELD_EVERY_S)
                self._turn = now
                await asyncio.sleep(0)
            if self._error is not None:  # aborted while this connected: nothing of it goes out
                raise self._error
            if waiter is not None and waiter.cancelled():
                return  # its caller gave up while it waited here: sent later, a retry of it went out twice
            several_frames = False
            try:
                if isinstance(data, _Text):
                    # Each piece a message of its own, all under the lock: no other write between them.
                    several_frames = len(data.pieces) > 1
                    for piece in data.pieces:
                        await end.send(piece, text=True)
                else:
                    view = memoryview(data)
                    if view.ndim != 1 or view.itemsize != 1:
                        view = view.cast("B")
                    several_frames = len(view) > end.frame_size
                    await end.send(view)
                    self.bytes_written += len(view)
            except asyncio.CancelledError:
                # A write of one frame (a text message, a short binary write) is on its way whole or not at all. A
                # write of several frames cut off here may have sent some of them: a close after it would hand the
                # reader a short stream as a whole one. (Cancelled before this, nothing of it was sent: the writer
                # goes on.)
                if several_frames and cut_off is not None and self._error is None:  # (set: aborted already)
                    await self._abort_cut_off(cut_off)
                raise
            except ChannelEndClosed as exc:
                # An error already set is why the socket closed under this write (this writer's abort, say): the
                # socket's own account (a dropped connection looks like a reader gone) would mislead.
                error = self._error or _closed_error(exc, self._channel_id, "write")
                assert error is not None  # the write side never maps a close to "no error"
                self._error = error
                raise error from exc
            if waiter is not None and waiter.cancelled() and cut_off is not None:
                # Its caller, cancelled as its frames went out, was told nothing of it went out, yet all of it did
                # (a retry sent it twice; even one frame): the stream is aborted as a direct write cut off is.
                await self._abort_cut_off("a queued write was cancelled part-way")
                raise ChannelClosedError(f"channel {self._channel_id} aborted", channel_id=self._channel_id)

    def _enqueue(self, data: bytes | _Text, future: asyncio.Future[None] | None = None) -> None:
        # Closed (stream.end, close, close_async) or failed: refused here, as where no loop runs. Queued, it went
        # out after the end of stream, or was dropped unsent, and the caller was told nothing.
        self._check_open()
        self._queue.append((data, future))
        self._pending_bytes += len(data)
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def _enqueue_and_wait(self, data: bytes | _Text) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(data, future)
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled after the pump sent it whole (its result set, this not resumed yet): cancelled once its
            # frames started, so the stream is aborted, as when the cancel comes while they go out. Let go as if
            # nothing was sent, a retry sent it twice and the reader saw a clean end.
            if (future.done() and not future.cancelled() and future.exception() is None
                    and self._error is None):
                await self._abort_cut_off("a queued write was cancelled once sent")
            raise

    async def _run_pump(self) -> None:
        try:
            while self._queue:
                data, future = self._queue[0]
                if future is not None and future.cancelled():
                    # Its caller gave up before a frame of it went out: dropped, or a retry would send it twice.
                    self._queue.popleft()
                    self._pending_bytes -= len(data)
                    self._space.set()
                    continue
                try:
                    await self._send(data, "a queued write was cut off part-way (its event loop ending?)", future)
                except ChannelError as exc:
                    self._fail_queue(exc)
                    return
                except Exception as exc:
                    # Not the socket's doing: a fault of this process. The stream cannot go on, and a writer
                    # failed with its socket left open kept the reader waiting for good: dropped, the reader
                    # sees an abort (or an abnormal close).
                    error = ChannelConnectionError(
                        f"channel {self._channel_id}: a queued write failed ({exc!r}); the connection was dropped",
                        channel_id=self._channel_id)
                    error.__cause__ = exc
                    self._fail_queue(error)
                    self._closed = True
                    end = self._end
                    if end is not None:
                        end.abort()
                    log.error("channel %s: a queued write failed; connection dropped", self._channel_id,
                              exc_info=exc)
                    return
                except BaseException:
                    self._fail_queue(ChannelClosedError(f"channel {self._channel_id}: write cancelled",
                                                        channel_id=self._channel_id))
                    raise
                self._queue.popleft()
                self._pending_bytes -= len(data)
                if future is not None and not future.done():
                    future.set_result(None)
                self._space.set()
        finally:
            self._pump = None

    def _fail_queue(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        while self._queue:
            _, future = self._queue.popleft()
            if future is not None and not future.done():
                future.set_exception(error)
        self._pending_bytes = 0
        self._space.set()

    async def _wait_pending_below(self, limit: int) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if self._pending_bytes < limit:
                return
            await self._space.wait()

    def _close_ended(self, closing: asyncio.Future[None]) -> None:
        """A close cancelled (only its loop's end does that: ``close_async`` shields it) did not get the stream
        through: the connection is dropped, which the engine takes as an abort. Left open on a loop that is gone,
        it kept the reader waiting with no end. (A task cancelled before it ran never ran its own code: hence a
        done callback.) An abort under way ends the connection itself."""
        end = self._end
        if closing.cancelled() and end is not None and self._aborting is None:
            end.abort()

    async def _close_impl(self) -> None:
        pump = self._pump
        if pump is not None:
            await asyncio.wait([pump])
        if self._error is not None:
            raise self._error
        async with self._home.lock:
            if self._error is not None:  # aborted, or a write failed, while this waited for the writes ahead
                raise self._error
            # Connect even if nothing was written, so the reader gets end-of-stream promptly (T24).
            end = await self._ensure_connected()
            if self._error is not None:  # aborted while this connected: its end-of-stream would beat the abort's
                raise self._error
            await end.aclose(ChannelCloseCode.NORMAL)
        peer = end.peer_close()
        if peer is not None and peer.code not in EOF_CODES:
            # The engine closed this writer itself (4002: the reader left; 1009: too big or over quota), possibly
            # while our own Close was on its way: either way the stream did not get through.
            error = _closed_error(peer, self._channel_id, "write")
            if error is not None:
                self._error = error
                raise error


def _drop_on(loop: asyncio.AbstractEventLoop | None, end: WebSocketEnd) -> None:
    """Drop ``end``'s connection, from any thread: on ``loop``, its own, if that runs (its transport is not
    thread-safe); else shut down from here at once (see :func:`_drop_connection`), and aborted on ``loop`` if that
    runs again (the socket's descriptor goes then). Never raises (a finalizer's)."""
    running = loop is not None and loop.is_running()
    if not running:
        with contextlib.suppress(Exception):
            _drop_connection(end)
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed meanwhile: shut down above, or by its loop's end
            loop.call_soon_threadsafe(end.abort)


def _drop_connection(end: WebSocketEnd | None) -> None:
    """Shut an end's TCP connection down from any thread, without its loop (closed, or not running): the peer sees
    the connection drop. Through the socket object, so never another socket that reused its descriptor."""
    if end is not None:
        ws_fastpath.shutdown(end.ws)


def _close_stuck(end: WebSocketEnd) -> str:
    """What is known of a close handshake that did not end within ``_ABORT_CLOSE_S``: its Close frame still in
    the transport's buffer behind bytes the peer does not take, or written with no reply."""
    unsent = ws_fastpath.write_buffer_size(end.ws)
    if unsent:
        return (f"its Close frame was not written out within {_ABORT_CLOSE_S:g} s ({unsent} bytes still buffered: "
                "the peer does not take them)")
    received, _ = ws_fastpath.close_frames(end.ws)
    if received is None:
        return f"its Close frame was written and the peer sent no Close reply within {_ABORT_CLOSE_S:g} s"
    return f"the peer answered its Close frame but did not end the connection within {_ABORT_CLOSE_S:g} s"


def _log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("channel close failed: %s", task.exception())


class LiveEnds:
    """The channel ends one client made (created, or given to its handlers in payloads), held weakly, so that its
    shutdown stops those still in use (ours): a thread blocked writing into a channel whose reader never came
    waited for the engine's attach deadline (300 s) after the client was gone.

    Example:
        >>> ends = LiveEnds()
        >>> writer = ChannelWriter("ws://127.0.0.1:1/", {"channel_id": "c1", "access_key": "k", "direction": "write"})
        >>> ends.add(writer)
        >>> ends.stop_all("the client was shut down")  # never used: left alone (its ref may be another's now)
        0
    """

    def __init__(self) -> None:
        self._ends: weakref.WeakSet[ChannelWriter | ChannelReader] = weakref.WeakSet()
        self._lock = threading.Lock()  # added on the client's loop, stopped from whichever thread shuts it down

    def add(self, end: ChannelWriter | ChannelReader) -> None:
        """Track ``end`` (weakly: a collected end drops its own socket)."""
        with self._lock:
            self._ends.add(end)

    def stop_all(self, why: str) -> int:
        """From any thread, without waiting: abort every writer in use and not closed (its blocked or later writes
        raise :class:`ChannelClosedError` naming ``why``; its reader gets :class:`ChannelAbortedError`), and close
        every reader in use and unfinished (its writer gets :class:`ReaderGoneError`; its reads raise
        :class:`ChannelClosedError` naming ``why``). Ends never used are left alone: their refs may have been
        handed to another worker. A writer whose close is under way is left to finish it. Returns how many ends
        it stopped."""
        with self._lock:
            ends = list(self._ends)
            self._ends.clear()
        stopped = 0
        for end in ends:
            if isinstance(end, ChannelReader):
                stopped += end.release_unfinished_now(why)
            elif not end.closed and end._held():
                end._stopped_by = why
                end.abort_soon(why)
                stopped += 1
        return stopped


# ---------------------------------------------------------------------------------------------------- reader


class ReadableStream:
    """Async iterable of the binary chunks of a :class:`ChannelReader` (``reader.stream``).

    Example:
        >>> async def count(reader: ChannelReader) -> int:
        ...     return sum([len(chunk) async for chunk in reader.stream])
    """

    def __init__(self, reader: ChannelReader) -> None:
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reader:
            yield chunk


class ChannelReader:
    """The reading end of a channel: iterate binary chunks; text messages go to ``on_message`` callbacks.

    End of stream ends iteration; an aborted or broken stream raises a :class:`ChannelError` subclass. All of
    its reads belong to one event loop: the same reader read under two ``asyncio.run`` calls raises
    :class:`ChannelLoopError` at the second (its socket went with the first loop). A reader that never got its
    socket there (a read cancelled before it connected) moves to the next loop that reads it instead. A read
    cancelled while it connects (``asyncio.wait_for(reader.recv(), t)`` timing out) leaves the reader usable: its
    connect goes on once the engine may have attached it, and the next read gets that socket.

    Example:
        >>> async def receive(reader: ChannelReader) -> bytes:
        ...     reader.on_message(lambda text: print("meta:", text))
        ...     return await reader.read_all()
    """

    def __init__(self, engine_ws_base: str, ref: StreamChannelRef | dict[str, Any]) -> None:
        self.ref = _as_ref(ref)
        self._channel_id = self.ref.channel_id
        self._url = build_channel_url(engine_ws_base, self.ref.channel_id, self.ref.access_key, "read")
        self._end: WebSocketEnd | None = None
        # Shared by concurrent reads, and going on past a read cancelled once the engine may have attached this end
        # (a wait_for(reader.recv(), t) that timed out): cut there, the reader's retry got ChannelInUseError and
        # the writer ReaderGoneError.
        self._connect = _SharedConnect(self._url, self._channel_id, True, self._connected)
        self._message_callbacks: list[Callable[[str], Any]] = []
        self._eof = False
        self._closed = False
        self._closed_why = ""  # who closed it when not its user (release_unfinished): later reads name it
        self._detached = False  # see detach()
        self._unread: bytes | None = None  # what a cancelled read_all had read, for the next read (_put_back)
        self._home = _Home(self._channel_id, "reader")
        # A reader left unclosed keeps its socket, attached, until it is collected: then it goes (_Home.abandon).
        weakref.finalize(self, self._home.abandon)
        self.bytes_read = 0
        self.stream = ReadableStream(self)

    @property
    def at_eof(self) -> bool:
        """Whether end-of-stream was received (and nothing put back by a cancelled ``read_all`` is left)."""
        return self._eof and self._unread is None

    def on_message(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(text)`` for every text message, during any read. Coroutine results are awaited."""
        self._message_callbacks.append(callback)

    async def recv(self) -> bytes | str | None:
        """The next message, text or binary, or ``None`` at end of stream (ours; callbacks are not called). Empty
        binary messages (a reference writer's ``write(b"")``) are skipped: a binary message is never ``b""``."""
        unread = self._unread
        if unread is not None:
            self._unread = None
            return unread
        if self._eof:
            return None
        if self._closed:
            raise self._closed_here()
        if self._home.loop is not _running_loop():
            self._home.bind(asyncio.get_running_loop(), self._held)
        end = self._end
        if end is None:
            end = await self._ensure_connected()
        while True:
            try:
                text, data = await end.receive()
            except ChannelEndClosed as exc:
                if self._closed:
                    # Closed under this read (released at its handler's end, the client's shutdown): an end of
                    # stream here would hand a task still reading a short stream as a whole one.
                    raise self._closed_here() from exc
                error = _closed_error(exc, self._channel_id, "read")
                if error is None:
                    self._eof = True
                    return None
                raise error from exc
            if text:
                try:
                    return data.decode()
                except UnicodeDecodeError as exc:
                    code = ChannelCloseCode.INVALID_DATA
                    await end.aclose(code, "invalid UTF-8")
                    raise ChannelConnectionError(f"channel {self._channel_id}: a text message is not valid UTF-8",
                                                 channel_id=self._channel_id, code=code) from exc
            if data:
                break
            # An empty binary message (a reference writer's write(b"")) carries no bytes. Handed out, b"" read as
            # the end of stream to a `while chunk := ...` loop, which stopped half-way with no error.
        self.bytes_read += len(data)
        return data

    async def read_chunk(self) -> bytes | None:
        """The next binary chunk (never empty), or ``None`` at end of stream; text messages meanwhile go to the
        callbacks."""
        while True:
            message = await self.recv()
            if message is None or not isinstance(message, str):
                return message
            await self._dispatch(message)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # Calls recv() directly rather than read_chunk(): one coroutine less per frame on the hot path.
        while (message := await self.recv()) is not None:
            if isinstance(message, str):
                await self._dispatch(message)
            else:
                yield message

    async def read_all(self, *, limit: int | None = None) -> bytes:
        """Read the entire stream into one ``bytes``: all of it, or a :class:`ChannelError` (the stream aborted,
        broken, ...) whose :attr:`~ChannelError.partial` holds what arrived before it. Cancelled (an
        ``asyncio.wait_for`` that timed out), it leaves what it had read to the reader's next read: a retried
        ``read_all`` returns the whole stream, not only the rest of it.

        ``limit`` (ours; ``None``: none, as the reference's): the most bytes to hold. Once more arrived,
        :class:`LimitExceededError`, whose ``partial`` holds the bytes before the chunk that crossed it (at most
        ``limit``); that chunk is left to the next read, so ``partial`` followed by the next reads is the whole
        stream. Bytes a cancelled ``read_all`` left count against it too. A peer that writes for good no longer
        grows the reader's memory for good.

        Example:
            >>> from iii_engine.testing import local_channel
            >>> async def demo() -> tuple[int, bytes, bytes | None]:
            ...     async with local_channel() as ch:
            ...         await ch.writer.write(b"header")
            ...         await ch.writer.write(b"and far too much")
            ...         await ch.writer.close_async()
            ...         try:
            ...             await ch.reader.read_all(limit=10)
            ...         except LimitExceededError as exc:
            ...             return exc.limit, exc.partial or b"", await ch.reader.read_chunk()
            ...         raise AssertionError("no limit")
            >>> asyncio.run(demo())
            (10, b'header', b'and far too much')
        """
        return await read_to_end(self.read_chunk, self._put_back, limit, "ChannelReader.read_all",
                                 self._channel_id)

    def _put_back(self, data: bytes) -> None:
        """Hand ``data``, read and not returned, to the next read first (before anything the socket holds)."""
        if data:
            self._unread = data

    async def close_async(self) -> None:
        """Stop reading; before end-of-stream this tells the writer that the reader is gone."""
        self._closed = True
        end = self._end
        if end is None:
            return
        if end.is_open:  # a socket still open needs its own loop to close; one closed already, none
            self._home.bind(asyncio.get_running_loop())
        await close_draining(end, end.aclose(ChannelCloseCode.NORMAL))

    def detach(self) -> ChannelReader:
        """Keep this reader open past the handler whose payload carried it (ours): by default a reader a handler
        started reading and left unfinished (not at its end, not closed) is closed as the handler ends, so its
        writer gets :class:`ReaderGoneError` at once instead of waiting on backpressure. A reader handed to a task
        that reads on after the handler returned must be detached first; that task then closes it. Returns the
        reader.

        Example:
            >>> reader = ChannelReader("ws://localhost:49134/", {"channel_id": "c1", "access_key": "k",
            ...                                                  "direction": "read"})
            >>> reader.detach() is reader
            True
        """
        self._detached = True
        return self

    async def release_unfinished(self, why: str) -> bool:
        """Close this reader if it was started (connected, or connecting) and is neither at its end, closed nor
        detached (:meth:`detach`): its writer hears the reader is gone. ``why`` is named by any read after it.
        Never raises; bounded (2 s for the close handshake, then the connection is dropped). A reader never read
        is left alone: its ref may have been handed on to another worker, who reads it. A reader with nothing left
        unread first waits up to 0.25 s for its writer's end of stream (text messages meanwhile are dropped): if it
        comes, the reader is at its end and stays so (its writer's close succeeds); bytes instead, or nothing,
        and it is closed. Returns whether it closed it.

        Example:
            >>> reader = ChannelReader("ws://localhost:49134/", {"channel_id": "c1", "access_key": "k",
            ...                                                  "direction": "read"})
            >>> asyncio.run(reader.release_unfinished("the handler returned"))  # never read: left alone
            False
        """
        if not self._claim(why):
            return False
        end = self._end
        if end is not None and end.is_open:
            loop = self._home.loop
            if loop is not None and loop is _running_loop():
                if self._unread is None and await self._ends_soon(end):
                    self._closed, self._closed_why, self._eof = False, "", True  # finished: not released
                    return False
                try:
                    async with asyncio.timeout(_ABORT_CLOSE_S):
                        await close_draining(end, end.aclose(ChannelCloseCode.NORMAL))
                except Exception as exc:  # TimeoutError, a broken socket: dropped, the writer hears it all the same
                    log.debug("release of channel %s reader: %r; connection dropped", self._channel_id, exc)
                    end.abort()
            else:
                _drop_on(loop, end)  # its socket is another loop's (a sync handler's): dropped from here
        return True

    async def _ends_soon(self, end: WebSocketEnd) -> bool:
        """Whether ``end``'s writer ends its stream normally within :data:`_RELEASE_GRACE_S`, no bytes before it
        (see :meth:`release_unfinished`; this reader is claimed meanwhile: a read started now fails as released).
        Text messages are skipped: a trailer (``iii_channels``' sink sends one) comes after the last byte. Never
        raises.
        """
        try:
            async with asyncio.timeout(_RELEASE_GRACE_S):
                while True:
                    text, _ = await end.receive()
                    if not text:
                        return False  # bytes the handler left unread: released, the writer hears it
        except ChannelEndClosed as exc:
            return _closed_error(exc, self._channel_id, "read") is None
        except Exception:  # TimeoutError (no end of stream within the grace), a broken socket: released
            return False

    def release_unfinished_now(self, why: str) -> bool:
        """:meth:`release_unfinished` from any thread, without waiting: the connection is dropped (its writer gets
        :class:`ReaderGoneError`). For a client's shutdown, which cannot wait on every reader's loop.

        Example:
            >>> reader = ChannelReader("ws://localhost:49134/", {"channel_id": "c1", "access_key": "k",
            ...                                                  "direction": "read"})
            >>> reader.release_unfinished_now("the client was shut down")  # never read: left alone
            False
        """
        if not self._claim(why):
            return False
        end = self._end
        if end is not None and end.is_open:
            _drop_on(self._home.loop, end)
        return True

    def _claim(self, why: str) -> bool:
        """Mark this reader closed by ``why`` if :meth:`release_unfinished` applies to it (a connect under way
        drops its socket as it lands, :meth:`_connected`)."""
        if self._detached or self._closed or self._eof or not self._held():
            return False
        self._closed = True
        self._closed_why = why
        return True

    def _closed_here(self) -> ChannelClosedError:
        why = f" ({self._closed_why})" if self._closed_why else ""
        return ChannelClosedError(f"channel {self._channel_id} reader is closed{why}", channel_id=self._channel_id)

    def _held(self) -> str:
        """What this reader has on its loop ("" for nothing: it can move to another, see :meth:`_Home.bind`)."""
        if self._end is not None:
            return "its socket"
        return "its connect under way" if self._connect.under_way else ""

    def __iii_json__(self) -> dict[str, Any]:
        """The ref, so a reader placed in a payload travels as plain JSON (S11)."""
        return self.ref.model_dump()

    async def __aenter__(self) -> ChannelReader:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close_async()

    async def _ensure_connected(self) -> WebSocketEnd:
        end = self._end
        return end if end is not None else await self._connect.wait()

    def _connected(self, end: WebSocketEnd) -> None:
        if self._end is None:
            self._end = self._home.end = end
        if self._closed and end.is_open:
            # Closed while its connect went on with no read waiting: nothing will read it, and the writer would
            # wait on backpressure for a reader that stays attached. Dropped, the writer hears the reader is gone.
            end.abort()

    async def _dispatch(self, text: str) -> None:
        for callback in self._message_callbacks:
            try:
                result = callback(text)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("error in channel %s message callback", self._channel_id)


__all__ = [
    "DEFAULT_HIGH_WATER_MARK",
    "MAX_FRAME_SIZE",
    "ChannelAbortedError",
    "ChannelClosedError",
    "ChannelConnectionError",
    "ChannelError",
    "ChannelExpiredError",
    "ChannelInUseError",
    "ChannelLoopError",
    "ChannelNotFoundError",
    "ChannelReader",
    "ChannelWriter",
    "LimitExceededError",
    "LiveEnds",
    "ReadableStream",
    "ReaderGoneError",
    "WritableStream",
    "build_channel_url",
    "keep_partial",
    "read_to_end",
]
