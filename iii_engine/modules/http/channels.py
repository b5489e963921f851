"""The REST API module's own ends of its per-request channels (docs/guides/engine.md#modules).

Each HTTP request gets two channels: ``request_body`` (the engine writes the raw body, the handler reads) and
``response`` (the handler writes control frames and body chunks, the engine reads). When the engine's relay
offers in-process ends (``open_local``), the engine's ends use them: same queue, backpressure and close codes,
no loopback handshake. Otherwise they attach as an ordinary WebSocket client of the engine's own channel
endpoint (docs/protocol.md#channels), at the cost of one loopback connection per end.

Close codes understood here follow docs/protocol.md#channel-improvements: 1000 (and 1005, a Close without a code, as
production sends)
is end of stream; anything else, or a dropped connection, is an abort.

Example:
    >>> channel_url("ws://127.0.0.1:49134/", {"channel_id": "c1", "access_key": "k+1", "direction": "read"})
    'ws://127.0.0.1:49134/ws/channels/c1?key=k%2B1&dir=read'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from iii import ws_fastpath
from iii.channel_end import EOF_CODES, ChannelCloseCode
from iii.wire import clip, loads

from ...channels import ChannelRelay, LocalChannelEnd
from ..base import ChannelService

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024  # the reference SDK's frame size for binary writes


class ChannelAborted(Exception):
    """The other end of a channel aborted, dropped, or the channel could not be opened; the message says which.

    Example:
        >>> str(ChannelAborted("response channel c1: writer closed with code 4001"))
        'response channel c1: writer closed with code 4001'
    """


def _frame_bound(max_header_bytes: int) -> int:
    """The longest control frame a head within ``max_header_bytes`` may come in: every character JSON-escaped
    (``\\uXXXX``, 6 each), plus room for the frame's own keys.

    Example:
        >>> _frame_bound(65536)
        397312
    """
    return 6 * max_header_bytes + 4096


class ResponseHeadersTooLarge(ChannelAborted):
    """The handler sent more control frames, or header bytes, before its first body chunk than the module allows;
    the response channel was closed (1009 and the reason on our end; the relay tells the writer its reader left,
    4002)."""


class _End(Protocol):
    """What this module uses of a channel end: a websockets client connection or a relay ``LocalChannelEnd``."""

    async def send(self, message: str | bytes) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


def channel_url(engine_url: str, ref: Mapping[str, Any]) -> str:
    """The channel endpoint URL for ``ref`` under ``engine_url`` (docs/protocol.md#channels)."""
    base = engine_url[:-1] if engine_url.endswith("/") else engine_url
    key = quote(str(ref["access_key"]), safe="")
    return f"{base}/ws/channels/{ref['channel_id']}?key={key}&dir={ref['direction']}"


async def _connect(engine_url: str, ref: Mapping[str, Any], relay: ChannelService | None = None) -> _End:
    """Open the end ``ref`` names: in-process through ``relay``, else over a socket to ``engine_url``."""
    if relay is not None:
        try:
            end: _End = relay.open_local(str(ref["channel_id"]), str(ref["access_key"]), str(ref["direction"]))
        except Exception as exc:  # the relay's refusal (unknown channel, wrong key or direction)
            raise ChannelAborted(f"cannot open channel {ref.get('channel_id')}: {exc}") from exc
        return end
    try:
        return await websockets.connect(channel_url(engine_url, ref), compression=None, max_size=None,
                                        ping_interval=None, open_timeout=10, proxy=None)
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        raise ChannelAborted(f"cannot open channel {ref.get('channel_id')}: {exc}") from exc


def _abort(end: _End) -> None:
    """Drop ``end`` without a close handshake (a socket's transport is aborted, a local end is told directly)."""
    if isinstance(end, LocalChannelEnd):
        end.abort()
    elif isinstance(end, ClientConnection):
        ws_fastpath.abort(end)


def _closed_cleanly(exc: ConnectionClosed) -> bool:
    return exc.rcvd is not None and exc.rcvd.code in EOF_CODES


def _why(exc: ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "connection dropped"
    return f"closed with code {exc.rcvd.code}" + (f": {exc.rcvd.reason}" if exc.rcvd.reason else "")


async def write_body(engine_url: str, ref: Mapping[str, Any], body: bytes | bytearray | AsyncIterator[bytes],
                     relay: ChannelService | None = None) -> None:
    """Write a request body into the ``request_body`` channel, then close it (end of stream).

    ``body`` is either the whole body or an iterator of chunks read from the HTTP client. If reading the client
    fails, the channel is aborted (close code 4001) so the handler sees an error rather than a short body. A
    handler that stops reading (reader gone) simply ends the copy. ``relay``: see :class:`ResponseChannel`.

    Example:
        >>> await write_body(engine.url, refs["writer"], b'{"a":1}')  # doctest: +SKIP
    """
    ws = await _connect(engine_url, ref, relay)
    try:
        if isinstance(body, bytes | bytearray):
            view = memoryview(body)  # one copy per frame, whichever buffer type came in
            for start in range(0, len(body), CHUNK_SIZE):
                await ws.send(bytes(view[start:start + CHUNK_SIZE]))
        else:
            try:
                async for chunk in body:
                    if chunk:
                        await ws.send(chunk)
            except ConnectionClosed:
                raise
            except Exception as exc:
                log.info("request body from the HTTP client failed: %r; aborting channel %s", exc,
                         ref.get("channel_id"))
                await ws.close(ChannelCloseCode.WRITER_ABORTED, f"HTTP client body failed: {exc!r}"[:120])
                return
        await ws.close(ChannelCloseCode.NORMAL)
    except ConnectionClosed as exc:
        log.debug("request body channel %s ended early: %s", ref.get("channel_id"), _why(exc))
    except asyncio.CancelledError:
        # The request finished before the handler read all of the body.
        _abort(ws)
        raise


def response_status(value: Any) -> int | str:
    """A handler's ``status_code`` as an HTTP status, or why it is not one (answered 502 naming it: before, a status
    of ``"500"``, ``600`` or ``-1`` was answered 200, a failure reported as a success).

    Example:
        >>> response_status(201), response_status("500")
        (201, "status_code '500' is not an HTTP status (an integer 100-599)")
    """
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return f"status_code {clip(value, 40)} is not an HTTP status (an integer 100-599)"


def response_headers(raw: Mapping[Any, Any]) -> dict[str, str] | str:
    """A handler's headers as text (a number or a boolean written as JSON writes it; a ``null`` value leaves its
    header out), or why one cannot be sent (a list or an object: its Python ``repr`` went out as the header's value).

    Example:
        >>> response_headers({"x-n": 3, "x-b": True, "x-none": None, "x-s": "a"})
        {'x-n': '3', 'x-b': 'true', 'x-s': 'a'}
        >>> response_headers({"x-list": ["a", "b"]})
        "header 'x-list' has a list value, not text"
    """
    out: dict[str, str] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[str(name)] = value
        elif isinstance(value, bool):
            out[str(name)] = "true" if value else "false"
        elif isinstance(value, int | float):
            out[str(name)] = str(value)
        else:
            return f"header {clip(str(name), 64)} has a {type(value).__name__} value, not text"
    return out


class ResponseChannel:
    """The engine's reader end of a ``response`` channel.

    Text frames before the first body chunk are control frames (``set_status``, ``set_headers``); binary frames
    are the body. Control frames after the first chunk are ignored, as production does. With a ``relay`` (the
    engine's channel service) the end is opened in-process, else over a socket to ``engine_url``.

    Example:
        >>> response = ResponseChannel(engine.url, refs["reader"])  # doctest: +SKIP
        >>> first = await response.first_chunk()  # doctest: +SKIP
        >>> rest = [chunk async for chunk in response.chunks()]  # doctest: +SKIP
        >>> response.status, response.headers  # doctest: +SKIP
        (206, {'content-type': 'text/plain'})
    """

    __slots__ = ("_control_frames", "_engine_url", "_failed", "_headers_error", "_max_control_frames",
                 "_max_header_bytes", "_ref", "_relay", "_status_error", "_wake", "_ws", "channel_id", "headers",
                 "status")

    def __init__(self, engine_url: str, ref: Mapping[str, Any], relay: ChannelService | None = None,
                 max_control_frames: int | None = None, max_header_bytes: int | None = None) -> None:
        self._engine_url = engine_url
        self._max_control_frames = max_control_frames
        self._max_header_bytes = max_header_bytes
        self._control_frames = 0
        self._ref = ref
        self._relay = relay
        self._ws: _End | None = None
        # While the channel is only reserved (see watch): what to call once our end opened, and why it failed.
        self._wake: Callable[[], None] | None = None
        self._failed: ChannelAborted | None = None
        self.status = 200
        self.headers: dict[str, str] = {}
        # why the handler's last status, or one of its headers, cannot be answered (see head_error)
        self._status_error: str | None = None
        self._headers_error: str | None = None
        self.channel_id = str(ref.get("channel_id"))

    async def first_chunk(self) -> bytes | None:
        """Read control frames until the first body chunk; ``None`` when the writer closed without a body.

        Raises :class:`ChannelAborted` when the writer aborted or the channel could not be opened, and
        :class:`ResponseHeadersTooLarge` (after closing our end with 1009 and the reason; the writer hears 4002)
        past ``max_control_frames`` control frames (empty binary frames count as ones) or ``max_header_bytes`` of
        headers.
        """
        self._wake = None
        if self._failed is not None:
            raise self._failed
        ws = self._ws
        if ws is None:
            self._ws = ws = await _connect(self._engine_url, self._ref, self._relay)
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    if message:
                        return message
                    # An empty write (the reference SDK sends one for ``write(b"")``) is not the end of the body
                    # and not a chunk to answer with, but it is a frame: it counts against the head's bound.
                elif self._max_header_bytes is not None and len(message) > _frame_bound(self._max_header_bytes):
                    # refused unparsed: a 66 MB control frame held the event loop 1.3 s in its parse before the
                    # head's bound was checked
                    too_long = (f"a control frame of {len(message)} characters, more than any response head within "
                                f"the limit of {self._max_header_bytes} bytes takes")
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(ChannelCloseCode.TOO_BIG, too_long[:120]), 2)
                    raise ResponseHeadersTooLarge(f"response channel {self.channel_id}: {too_long}")
                else:
                    self._control(message)
                refusal = self._over_limits()
                if refusal is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(ChannelCloseCode.TOO_BIG, refusal[:120]), 2)
                    raise ResponseHeadersTooLarge(f"response channel {self.channel_id}: {refusal}")
        except ConnectionClosed as exc:
            if _closed_cleanly(exc):
                return None
            raise ChannelAborted(f"response channel {self.channel_id}: writer {_why(exc)}") from None

    def watch(self, wake: Callable[[], None]) -> bool:
        """Open our end only once the handler attaches to the channel, then call ``wake``; ``False`` (nothing
        arranged) unless the relay is a :class:`ChannelRelay` holding the channel reserved, with nothing attached.

        Why: a handler that answers with a plain result never opens its response channel, and an end opened for
        nothing costs the attach, its wait and its teardown on every request. Our end still attaches before the
        handler's (from the relay's callback), as if it had been open all along. :meth:`first_chunk` ends the
        watch (and opens the end itself if the handler never came).
        """
        relay = self._relay
        if self._ws is not None or not isinstance(relay, ChannelRelay):
            return False
        if not relay.when_live(self.channel_id, self._on_live):
            return False
        self._wake = wake
        return True

    def _on_live(self) -> None:
        wake, self._wake = self._wake, None
        if wake is None:  # the watch ended: first_chunk opens the end itself
            return
        assert self._relay is not None
        try:
            self._ws = self._relay.open_local(self.channel_id, str(self._ref["access_key"]), "read")
        except Exception as exc:  # cannot happen with our own ref; the request still needs an answer
            self._failed = ChannelAborted(f"cannot open channel {self.channel_id}: {exc}")
        wake()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body chunks after the first one, until end of stream; :class:`ChannelAborted` on abort."""
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self) -> bytes | None:
        """The next body chunk after the first one; ``None`` at the end of the stream, :class:`ChannelAborted` on
        abort (a plain loop over this costs less per chunk than ``async for`` over :meth:`chunks`)."""
        ws = self._ws
        if ws is None:
            return None
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    if message:
                        return message
                else:
                    log.debug("response channel %s: control frame after the body started; ignored",
                              self.channel_id)
        except ConnectionClosed as exc:
            if not _closed_cleanly(exc):
                raise ChannelAborted(f"response channel {self.channel_id}: writer {_why(exc)}") from None
            return None

    def _over_limits(self) -> str | None:
        """Why the response head is refused, or ``None`` while it is within the limits."""
        self._control_frames += 1
        limit = self._max_control_frames
        if limit is not None and self._control_frames > limit:
            return f"more than {limit} control frames (or empty binary frames) before the first body chunk"
        limit = self._max_header_bytes
        if limit is not None:
            size = sum(len(k) + len(v) for k, v in self.headers.items())
            if size > limit:
                return f"response headers of {size} bytes are larger than the limit of {limit} bytes"
        return None

    def _control(self, text: str) -> None:
        try:
            frame = loads(text)
        except ValueError:
            log.warning("response channel %s: ignoring a text frame that is not JSON", self.channel_id)
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "set_status":
            status = response_status(frame.get("status_code"))
            if isinstance(status, int):  # the last set_status is the status, a bad one before it forgotten
                self.status, self._status_error = status, None
            else:
                self._status_error = status
        elif kind == "set_headers":
            headers = frame.get("headers")
            if isinstance(headers, dict):
                texts = response_headers(headers)
                if isinstance(texts, dict):
                    for name, value in headers.items():
                        if value is None:  # a null takes out what an earlier set_headers set
                            self.headers.pop(str(name), None)
                    self.headers.update(texts)
                else:
                    self._headers_error = self._headers_error or texts
            else:
                log.warning("response channel %s: ignoring set_headers without a headers object", self.channel_id)
        else:
            log.warning("response channel %s: ignoring unknown control frame %r", self.channel_id, kind)

    @property
    def head_error(self) -> str | None:
        """Why the handler's status or headers cannot be answered (a status that is no HTTP status, a header value
        that is no text): the client gets 502 naming it, not a 200 it was not sent."""
        return self._status_error or self._headers_error

    @property
    def local(self) -> bool:
        """Whether the end is in-process (or not open): discarding the channel is then all the cleanup needed."""
        return self._ws is None or isinstance(self._ws, LocalChannelEnd)

    def abort(self) -> None:
        """Drop the end at once (engine shutdown): a pending :meth:`next_chunk` raises :class:`ChannelAborted`."""
        if self._ws is not None:
            _abort(self._ws)

    async def aclose(self) -> None:
        """Let go of the channel; a writer still attached is told the reader left (4002)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
