"""REST API module (``modules::api::RestApiModule``): the ``http`` trigger type on its own HTTP port.

An ``http`` trigger binds a method and a path to a function. Each request becomes one invocation with the
request object of docs/guides/engine.md#modules; the function answers with a JSON object (status, body, headers) or by
streaming through the ``response`` channel. Differences from production, all additive
(docs/protocol.md#module-improvements): returned
``headers`` are applied (M4), ``statusCode`` is accepted when ``status_code`` is absent (M5), and the raw body
is written to ``request_body`` and closed at once for every request (M6).

``default_timeout`` bounds the wait for the response to start (the function's result or the first body chunk);
once a streamed body has started it runs until the handler closes its writer, unless the function fails (the
connection is cut: the client sees an incomplete body), returns a result (its writer then has ``RESULT_GRACE_S``
without a chunk to finish), returns null and its writer stays silent for ``default_timeout`` (cut), the client
leaves (the request ends at once, the writer hears 4002) or stops reading for ``send_timeout`` (cut; the body's last
bytes included). See :class:`_StreamWatch`. The body's end (its terminating chunk, or the last byte of a
Content-Length body) goes out only once the writer closed and the function's outcome came in: one that failed has the
connection cut instead, whichever of the two the engine saw first (see ``RestApiModule._after_close``). A complete
request is answered even when its client half-closed the connection after it (see :class:`_Connection`).

Every request body is received whole before the handler runs and before the request takes a concurrency slot,
so a client that sends headers and then nothing (or trickles) holds no slot: it gets 408 after
``body_timeout``. A body over ``max_body_bytes`` is 413 (at once when Content-Length says so, else as soon as
the count crosses the limit) and the handler never sees it. Bodies held in memory across all requests are capped
by ``max_buffered_bytes``; a body that does not fit is 503 at once. ``header_timeout`` closes connections that do
not complete their headers in time (slow-header clients, idle keep-alive connections). A request that finds all
``concurrency_request_limit`` slots busy waits at most ``slot_timeout``, then gets 503 with ``Retry-After``. At
most ``max_connections`` client connections are open at once; one more is answered 503 and closed before a byte of
it is read (logged rate-limited). A request header value whose bytes are not UTF-8 reaches the handler read as
ISO-8859-1 (:func:`header_text`).

A request whose client disconnects while it waits for a slot is not invoked (``abandoned`` counts them); one whose
client leaves before the first body chunk of a handler attached to its response channel ends at once, the writer
told its reader left (``gone`` counts them). A handler may send at most ``MAX_CONTROL_FRAMES`` (100) control
frames (an empty binary frame counts as one) and ``MAX_HEADER_BYTES`` (64 KiB) of headers before its first body
chunk; past either its response channel is closed (its writer sees 4002) and the client gets 502.
Stopping the engine answers every request still waiting for its handler (or for its condition function) with 503 at
once (it does not wait out ``default_timeout``); streamed responses in progress are cut.

Per request the module creates both channels on the relay in one call (``ChannelRelay.reserve_pair``), where they
stay reserved (ids and keys only) until the handler attaches to one; its own ends are in-process: the body is queued
whole at once (no task) and the response end, opened only once the handler attaches to the response channel (a
handler that just returns a result never does), reads straight from the channel's queue. The invocation is started
without a task (``EngineServices.start_invocation``); until the handler attaches, the request's task waits for its
outcome alone (and a result decides the answer there, without the race's coroutines), and from then on the race
between the result and the first body chunk runs in the same task (see ``RestApiModule._first_chunk``). The waits
before the response starts end at the request's deadline through one timer shared by all requests (``_open_race``).

``engine.module("http_api").port`` is the bound port (useful with ``port: 0``).

Example (engine configuration):
    modules:
      - class: modules::api::RestApiModule
        config: {port: 3111, default_timeout: 30000, concurrency_request_limit: 1024}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Final, TypeVar

from aiohttp import HttpVersion11, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.loss_log import LossLog
from iii.protocol.client import WORKER_BUSY
from iii.wire import dumps, loads
from iii.ws_fastpath import reset_transport

from ...channels import ChannelRelay, TooManyChannels
from ...invocations import ENGINE_STOPPING, Started, stopped
from ...limits import SKIP_LOG_INTERVAL_S, Slots
from ...send_queue import unsent
from ...server import url_host
from ..base import UNDECIDED_CODES, CallNotSent, EngineError, EngineModule, EngineServices, StartedCall, UnwritableBody
from .channels import (
    CHUNK_SIZE,
    ChannelAborted,
    ResponseChannel,
    ResponseHeadersTooLarge,
    response_headers,
    response_status,
)
from .content_coding import BodyDecoder, BodyError, wire_bound
from .routes import BadPath, RouteMatch, RouteTable, parse_http_trigger
from .settings import ApiSettings

log = logging.getLogger(__name__)


class _ClientErrors(logging.Filter):
    """Turns aiohttp's ERROR-with-traceback for a request it could not parse (a line over 8190 bytes, a bad chunk
    size, too many headers, a body it cannot decode) into one INFO line, or none when the module already logged the
    refusal.

    Why: the client is at fault, not the engine, and any client can send such requests as fast as it likes; a
    traceback of some 20 lines each at ERROR would let it fill the engine's log and bury real errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            # A body aiohttp could not decode (Content-Encoding that is not what it says, broken chunks), met again
            # where aiohttp reads the rest of a body after the response ("Unhandled exception" with a traceback).
            if getattr(exc, _ANSWERED, False):  # _receive answered it and said so in the log
                return False
            record.msg, record.args = "HTTP request body dropped: %s", (" ".join(str(exc).split())[:200],)
        elif isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "HTTP request from %s refused with %d: %s"
            record.args = (remote, exc.code, " ".join(str(exc.message).split())[:200])
        else:
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return _server_log.isEnabledFor(logging.INFO)


# Set on a body error _receive answered (400) and logged: aiohttp meets the same error again when it reads the rest of
# the body after the response, and _ClientErrors drops that record.
_ANSWERED = "_iii_answered"
# What a half-closed connection is sent before its answer (see _Connection): an interim response any HTTP/1.1 client
# skips, to which a client that closed its socket (not just its side) answers with a reset.
_PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
PROBE_WAIT_S = 1.0
# aiohttp's own server messages, under ours; requests it cannot parse are one INFO line (see _ClientErrors)
_server_log = logging.getLogger(f"{__name__}.server")
_server_log.addFilter(_ClientErrors())

# After refusing a body (413/408/503) the rest of it is read and dropped for at most this long, so a client that
# only reads the answer once it has sent everything still gets it; longer would also hold up shutdown.
LINGER_S = 2.0
_STREAM_HEADER_SKIP = frozenset({"transfer-encoding", "connection", "keep-alive"})
# Headers that frame the body on the wire. A JSON or empty response's body is the engine's own, so only the engine
# may state its length: a handler's Content-Length that disagrees (or a Transfer-Encoding the body does not follow)
# desynchronises the connection, the rest of the body being read as the next response.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# JSON bodies up to this size are not claimed at their decoded cost (at most ~100 KB each decoded)
_JSON_CLAIM_FROM: Final = 4096
JSON_CLAIM_FACTOR: Final = 4
"""A JSON request body over 4 KiB is claimed at this many times its bytes, plus its objects, lists and values, against
``max_buffered_bytes`` while it is decoded and passed on (see :meth:`RestApiModule._claim_decoded`)."""
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
# CR, LF and NUL would inject or break headers; the other control characters (but tab) the HTTP writer refuses
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A handler's response head: control frames (set_status / set_headers) and empty binary frames before the first body
# chunk, and the bytes of the headers they set. Past either, the response channel is closed (the handler's writer
# hears 4002, its reader left) and the client gets 502; without a bound a handler could send them until
# default_timeout, each one parsed and merged.
MAX_CONTROL_FRAMES = 100
MAX_HEADER_BYTES = 64 * 1024
# A function that returns a result while its response streams cannot have that result sent: its writer then has this
# long without sending a chunk to finish the body (waits for the client and what follows its close do not count),
# else the response is cut.
RESULT_GRACE_S = 2.0
# Bytes the chunked framing adds to a body chunk on the wire (its hex size line and CRLF), rounded up.
_CHUNK_FRAMING = 32
# A handler's chunk (the SDK's frames are up to 1 MiB) goes to the client in slices of this size, each wait bounded by
# send_timeout (see _send): a write returns only once most of what it handed over drained, so a whole frame's write
# timed at once cut a client reading steadily at 200 KiB/s with 2 s (at 4.2 MB), 24 KiB/s at the default 30 s.
SEND_SLICE = 64 * 1024


def _left_unprobed(request: web.BaseRequest) -> bool:
    """``request`` is HTTP/1.0 and its client ended its side: no probe can tell a half-close from a client that
    left (:class:`_Connection`), so one that did so while its request waited for a slot is taken as gone. Before,
    such clients that had closed their sockets were invoked, 3 of 3 (the README says they never are)."""
    return request.version < HttpVersion11 and getattr(request.protocol, "input_ended", False) is True


class _Refusal(asyncio.Protocol):
    """A connection past ``max_connections``: answered 503 and closed, not one byte of it read."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(self._answer)
        transport.close()


class _Connection(web.RequestHandler):
    """aiohttp's handler of one client connection, answering a client that half-closes it (``shutdown(SHUT_WR)``).

    Before its request body ended: the body fails (400, see ``_receive``) and the answer goes out before the
    connection closes. After a complete request whose answer has not started (HTTP/1.1 allows a client to end its
    side once it sent everything; ``nc -N`` does): the request is answered as usual, then the connection closes
    (pipelined requests included). An end of input cannot tell a half-close from a client that left, so the engine
    first sends an interim ``100 Continue`` (:data:`_PROBE`; HTTP/1.1 lets a server send it unasked and clients skip
    it): a client that closed its socket answers it with a reset, looked for at once and after
    :data:`PROBE_WAIT_S`, and is then treated as gone (a request waiting for a slot is not invoked, see
    ``RestApiModule._handle``). An HTTP/1.0 request, to which no 1xx may go, is answered
    without the probe, unless it was still waiting for a slot or for its streamed answer's first chunk: with no probe
    its client cannot be told from one that left (:attr:`input_ended`, :attr:`on_input_ended`), and a request whose
    client left while it waited is never invoked (or ends at once, its handler's writer told the reader left).

    Why: aiohttp lets the transport close at the client's end of input, so such a client got its connection closed
    and no answer at all (measured: ``b''`` at once, the handler never invoked). At any other time an end of input
    closes the connection as before: an idle keep-alive connection, and a client gone during a streamed response,
    which must be seen gone at once (see :class:`_StreamWatch`).
    """

    __slots__ = ("answered", "body", "input_ended", "on_input_ended", "request")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # The body of the latest request (set by _BoundedServer as it makes the request, before its handler runs)
        self.body: StreamReader | None = None
        # The latest request (set with body): its answer has not started while its writer wrote nothing
        self.request: web.BaseRequest | None = None
        # The client ended its side (half-closed, or left: the two look alike until a probe's answer)
        self.input_ended = False
        # Told when an HTTP/1.0 client ends its side while its request waits (no probe can tell it from one that
        # left): set while a streamed answer waits for its first chunk (RestApiModule._respond)
        self.on_input_ended: Callable[[], None] | None = None
        # The latest request's answer was written (all of it handed to the transport): until the next request, only
        # the client changes what is left to send (see _BoundedServer.stalled_writes)
        self.answered = False

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        # aiohttp calls this once a response was written (or found its client gone): the one place that says so
        self.answered = True
        super().log_access(request, response, time)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol: True keeps the transport open
        self.input_ended = True
        bodies = [payload for _, payload in self._messages]  # pipelined requests not yet begun
        if self.body is not None:
            bodies.append(self.body)
        cut = [body for body in bodies if not body.is_eof()]
        if cut:
            for body in cut:
                body.set_exception(RequestPayloadError("the client closed its side of the connection before the "
                                                       "body ended"))
            self.close()  # nothing more can come from this client: close once the answer is out
            return True
        request = self.request
        unanswered = request is not None and request.writer.output_size == 0
        if not unanswered and not self._messages:
            return False  # idle, or during an answer: the client left
        if self._messages:  # requests read but not begun: answer them all, then close after the last
            message, payload = self._messages[-1]
            if isinstance(message, RawRequestMessage):
                self._messages[-1] = (message._replace(should_close=True), payload)
        else:
            self.close()
        # The probe goes first only while no byte of an answer is on the way: never into the middle of a response
        if request is not None and unanswered:
            version = request.version
        elif request is None and isinstance(self._messages[0][0], RawRequestMessage):
            version = self._messages[0][0].version
        else:
            return True
        if version >= HttpVersion11 and self.transport is not None:
            self.transport.write(_PROBE)
            # The transport no longer reads, so nothing would notice the reset: look for it (on loopback it came
            # before the next loop pass; a network's round trip, under PROBE_WAIT_S)
            loop = asyncio.get_running_loop()
            loop.call_soon(self._probed)
            loop.call_later(PROBE_WAIT_S, self._probed)
        elif self.on_input_ended is not None:
            self.on_input_ended()
        return True

    def _probed(self) -> None:
        """A client that closed its socket answered the probe with a reset: its error is pending on ours."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                transport.abort()  # the client is gone: as if the transport had seen it


class _BoundedServer(web.Server):
    """aiohttp's server with at most ``max_connections`` client connections open; one more is answered 503 (see
    :class:`_Refusal`) and ``refused`` is called.

    Why: each connection holds a file descriptor for as long as the client keeps it (up to ``header_timeout`` when
    idle), for the price of a connect. 600 idle connections under a 512-descriptor limit left none for a worker's
    WebSocket (its handshake timed out) and made asyncio log thousands of "Too many open files" errors a second.
    """

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], *,
                 max_connections: int, refused: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.open_connections = 0  # counted from the protocol's creation: accepts come in batches
        # The connections open now, for the write watch (RestApiModule._watch_writes): what each had left unsent
        # at the watch's last look, while it was waiting for its client (else -1)
        self.handlers: dict[_Connection, int] = {}
        # What to call when a connection closes, for connections whose response streams (see _StreamWatch): aiohttp
        # tells a handler nothing of a client gone while it does not read or write.
        self.on_lost: dict[web.RequestHandler, Callable[[], None]] = {}
        self._refused = refused
        body = dumps({"error": f"too many connections (max_connections {max_connections}); retry later"}).encode()
        self._answer = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    # the factory asyncio calls per accepted connection: a refusal is a bare protocol, not a RequestHandler; our
    # handler class as web.Server makes its own (its fallback for bad handler kwargs is not needed: ours are fixed)
    def __call__(self) -> web.RequestHandler | _Refusal:  # type: ignore[override]
        if self.open_connections >= self.max_connections:
            self._refused()
            return _Refusal(self._answer)
        self.open_connections += 1
        handler = _Connection(self, loop=self._loop, **self._kwargs)
        self.handlers[handler] = -1
        return handler

    def _make_request(self, message: RawRequestMessage, payload: StreamReader, protocol: web.RequestHandler,
                      writer: AbstractStreamWriter, task: asyncio.Task[None]) -> web.BaseRequest:
        request = super()._make_request(message, payload, protocol, writer, task)
        if isinstance(protocol, _Connection):
            protocol.body, protocol.request = payload, request
            protocol.answered = False
            self.handlers[protocol] = -1  # an answer's bytes will join what is left: not a stall's measure
        return request

    def stalled_writes(self) -> list[_Connection]:
        """The connections whose client took none of their unsent bytes since the last call, while nothing but
        the client could change those: each has bytes left in its buffer, no streamed response (those are timed as
        they are written) and is closing (the transport's close waits for them), paused for writing (aiohttp waits
        for a whole answer's last part) or has its latest request answered (the bytes wait for the next request,
        or for the close)."""
        stalled = []
        handlers = self.handlers
        for handler, before in handlers.items():
            transport = handler.transport
            if (transport is None or handler in self.on_lost or not transport.get_write_buffer_size()
                    or not (handler.answered or handler.writing_paused or transport.is_closing())):
                handlers[handler] = -1
                continue
            left = unsent(transport)
            if 0 <= before <= left:
                stalled.append(handler)
            handlers[handler] = left
        return stalled

    def connection_lost(self, handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        self.open_connections -= 1
        self.handlers.pop(handler, None)  # type: ignore[call-overload]  # a _Connection, as __call__ made it
        lost = self.on_lost.pop(handler, None)
        if lost is not None:
            lost()
        super().connection_lost(handler, exc)


class _Timeout(Exception):
    """The request outlived ``default_timeout``."""


class _ClientGone(Exception):
    """The client's connection closed (or an HTTP/1.0 client ended its side) while its handler was attached to the
    response channel, before the first body chunk: nobody is left to answer."""


class _Refused(Exception):
    """The request cannot be served as sent; ``status`` and the message go back to the client."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _engine_stopping() -> _Refused:
    """The answer to a request the module's stop cut short (retry later, against another engine or this one)."""
    return _Refused(503, "the engine is stopping; retry later", {"Retry-After": "1"})


class BodyBudget:
    """Bytes of request bodies held in memory, across all requests; a claim that does not fit fails at once.

    Failing instead of waiting keeps partly received bodies from waiting on each other until their deadlines.

    Example:
        >>> budget = BodyBudget(10)
        >>> budget.try_take(8), budget.try_take(3), budget.used
        (True, False, 8)
        >>> budget.give(8); budget.used
        0
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def try_take(self, size: int) -> bool:
        """Claim ``size`` bytes if they fit under the capacity."""
        if self.used + size > self.capacity:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Return ``size`` bytes claimed earlier."""
        self.used -= size


class _Claim:
    """One request's share of the :class:`BodyBudget`, returned in one go when the request ends."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def add(self, size: int) -> None:
        if not self._budget.try_take(size):
            raise _Refused(503, f"request bodies in memory would exceed {self._budget.capacity} bytes "
                                f"(max_buffered_bytes); retry later", {"Retry-After": "1"})
        self.size += size

    def release(self) -> None:
        if self.size:  # most requests have no body
            self._budget.give(self.size)
            self.size = 0


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    if not headers:  # the usual answer: no dict to merge into
        return web.Response(status=status, body=dumps(body).encode(), content_type="application/json")
    merged = {"Content-Type": "application/json"}
    merged.update(headers)
    return web.Response(status=status, body=dumps(body).encode(), headers=merged)


def _status_of(result: Mapping[str, Any]) -> int | str:
    """The result's status (200 when it names none: M4), or why the one it names is no HTTP status."""
    status = result.get("status_code")
    if status is None:
        status = result.get("statusCode")  # M5: an ApiResponse dumped by alias
    return 200 if status is None else response_status(status)


def head_problem(status: int, headers: Mapping[str, str]) -> str | None:
    """Why a handler's status and headers cannot be sent as an HTTP response head, or ``None`` if they can.

    A 1xx status is not a final answer (the client would wait for one that never comes); a header name that is
    not a token, or a value with a control character but tab, would be refused by the HTTP writer mid-response (or,
    with CR, LF or NUL unchecked, inject headers).

    Example:
        >>> head_problem(200, {"x-a": "1"}) is None
        True
        >>> head_problem(101, {})
        'status 101 is informational, not a final response status'
        >>> head_problem(200, {"x-a": "1\\r\\nset-cookie: s=1"})
        "header 'x-a' has a control character (CR, LF, NUL or another) in its value"
    """
    if status < 200:
        return f"status {status} is informational, not a final response status"
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            return f"header name {name[:64]!r} is not a valid HTTP header name"
        if _HEADER_VALUE_FORBIDDEN.search(value):
            return f"header {name[:64]!r} has a control character (CR, LF, NUL or another) in its value"
    return None


def header_text(value: str) -> str:
    """A request header value as the handler gets it: as sent when its bytes are UTF-8, else its bytes read as
    ISO-8859-1 (RFC 9110 5.5: field values beyond ASCII are opaque bytes, historically Latin-1).

    Why: aiohttp hands on bytes that are not UTF-8 as lone surrogates (``surrogateescape``), which no JSON or
    MessagePack encoder takes; such a request was a 500 with a traceback. Production sends such a value as ``""``;
    here no byte of it is lost, though a value mixing UTF-8 with stray bytes reads as Latin-1 mojibake
    (``caf\xc3\xa9\xe9`` arrives as ``cafÃ©é``): the bytes can be had back with ``.encode("latin-1")``.

    Example:
        >>> header_text("caf\\udce9"), header_text("café"), header_text("plain")
        ('café', 'café', 'plain')
    """
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


def _unframed(headers: Mapping[str, str]) -> dict[str, str]:
    """A handler's headers for a body the engine writes: without the ones that frame it (the engine sets them)."""
    return {k: v for k, v in headers.items() if k.lower() not in _FRAMING_HEADERS}


def result_response(result: Any) -> web.Response:
    """The JSON response for a handler's non-null result (docs/guides/engine.md#modules, with M4 and M5); 502 when
    its status or headers cannot be sent (:func:`head_problem`). Content-Length and Transfer-Encoding are the
    engine's: a handler's are dropped.

    Example:
        >>> r = result_response({"statusCode": 201, "body": {"ok": True}, "headers": {"x-a": "1"}})
        >>> r.status, r.headers["x-a"], r.body
        (201, '1', b'{"ok":true}')
        >>> sorted(result_response({"body": "x", "headers": {"Content-Length": "0", "x-b": "2"}}).headers)
        ['Content-Type', 'x-b']
    """
    if type(result) is not dict and not isinstance(result, Mapping):  # a decoded result is a dict: no ABC check
        return _json_response(200, {})
    body = result.get("body")
    raw_headers = result.get("headers")
    if raw_headers is None:  # the usual answer: only the status to check
        status = result.get("status_code")
        if type(status) is not int or not 200 <= status <= 599:  # else _status_of's answer, without its call
            status = _status_of(result)
        if isinstance(status, int) and status >= 200:
            return _json_response(status, {} if body is None else body)
    texts = response_headers(raw_headers) if raw_headers is not None and isinstance(raw_headers, Mapping) else None
    if isinstance(texts, str):
        return _bad_gateway(texts)
    headers = _unframed(texts) if texts is not None else None
    status = _status_of(result)
    if isinstance(status, str):
        return _bad_gateway(status)
    problem = head_problem(status, headers or {})
    if problem is not None:
        return _bad_gateway(problem)
    return _json_response(status, {} if body is None else body, headers)


def _empty_response(status: int, headers: Mapping[str, str], head_request: bool) -> web.Response:
    """The response of a handler that closed its response channel without a body chunk (and returned null).

    Its Content-Length is kept only for a HEAD request, where it states the size of a body never sent."""
    if not head_request:
        headers = _unframed(headers)
    problem = head_problem(status, headers) or _length_problem(headers)
    if problem is not None:
        return _bad_gateway(problem)
    return web.Response(status=status, headers=headers)


def _bodyless(request: web.BaseRequest, status: int) -> bool:
    """Whether the answer to ``request`` with ``status`` has no body by HTTP's rules (RFC 9110 6.4.1: to HEAD, 204,
    304; 1xx is refused as a final status)."""
    return request.method == "HEAD" or status in (204, 304)


def _length_problem(headers: Mapping[str, str]) -> str | None:
    """Why a handler's Content-Length headers cannot be sent (not a number of bytes, or two that differ), else
    ``None``; :func:`declared_length` reads the length itself.

    Example:
        >>> _length_problem({"Content-Length": "12"}), _length_problem({"content-length": "-1"})
        (None, "Content-Length '-1' is not a number of bytes")
    """
    try:
        declared_length(headers)
    except ValueError as exc:
        return str(exc)
    return None


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The body length a handler's headers state (``None``: none); ``ValueError`` naming why it is not one.

    Example:
        >>> declared_length({"x": "1"}), declared_length({"Content-Length": " 7 "})
        (None, 7)
    """
    declared: int | None = None
    for name, value in headers.items():
        if name.lower() == "content-length":
            text = value.strip()
            if not (text.isascii() and text.isdigit()):
                raise ValueError(f"Content-Length {value[:64]!r} is not a number of bytes")
            if declared is not None and int(text) != declared:
                raise ValueError("two different Content-Length headers")
            declared = int(text)
    return declared


def _bad_gateway(message: str) -> web.Response:
    log.warning("HTTP handler's response refused: %s", message)
    return _json_response(502, {"error": message})


def _error_response(message: str) -> web.Response:
    error_id = uuid.uuid4().hex
    log.warning("HTTP handler failed (error_id %s): %s", error_id, message)
    return _json_response(500, {"error": message, "error_id": error_id})


def _outcome(future: asyncio.Future[tuple[Any, Any]], function_id: str) -> tuple[Any, Any]:
    """``(result, error_body)`` of a started call of ``function_id``; a built-in's task cancelled (engine shutdown)
    is a stopped call."""
    if future.cancelled():
        return None, stopped(function_id, ENGINE_STOPPING)
    exc = future.exception()
    if exc is not None:
        return None, {"code": "internal_error", "message": repr(exc)}
    return future.result()


def _decided(outcome: asyncio.Future[tuple[Any, Any]], function_id: str) -> web.Response | None:
    """The response when the (done) function's outcome alone makes it: its error, or its result unless null."""
    if outcome.cancelled() or outcome.exception() is not None:
        return _failure(_outcome(outcome, function_id)[1])
    result, error = outcome.result()
    if error is not None:
        return _failure(error)
    if result is not None:
        return result_response(result)
    return None


def _failure(error: Any) -> web.Response:
    """The response for a function's error body; a timed-out invocation is the request's timeout, and one its
    worker refused for being busy (our SDK's ``worker_busy``) a 503 to retry: the handler never ran, and a 500 said
    it failed. Not logged per request: the worker counts its refusals, and a flood of them was a line each."""
    if isinstance(error, Mapping):
        code = error.get("code")
        if code == "invocation_timeout":
            raise _Timeout
        if code == WORKER_BUSY:
            return _json_response(503, {"error": str(error.get("message", "")), "code": code}, {"Retry-After": "1"})
        if isinstance(error, UnwritableBody):  # the request's data (a body nested too deep) could not be passed on:
            # the client's fault (a worker's own serialization_error is a 500, as any failure of the function)
            return _json_response(400, {"error": str(error.get("message", "")), "code": code})
        return _error_response(str(error.get("message", "")))
    return _error_response(str(error))


def _decides(outcome: asyncio.Future[tuple[Any, Any]]) -> bool:
    """Whether the function's outcome alone makes the response: done, and not a null result."""
    if not outcome.done():
        return False
    if outcome.cancelled() or outcome.exception() is not None:
        return True
    result, error = outcome.result()
    return result is not None or error is not None


_STOPPING = "stopping"
# The client took none of a streamed response's unsent bytes for send_timeout while the engine waited for the
# function's outcome (RestApiModule._after_close)
_STALLED = "stalled"
_T = TypeVar("_T")
_OUTCOME = "outcome"
_DEADLINE = "deadline"
_GONE = "gone"


class _HeldSlot:
    """A request's ``concurrency_request_limit`` slot, given back once: when its streamed body is whole and only its
    function's outcome is waited for, or when the request ends, whichever comes first.

    Example:
        >>> slots = Slots(1)
        >>> slots.try_take(), slots.try_take()
        (True, False)
        >>> held = _HeldSlot(slots)
        >>> held.release(); held.release(); slots.try_take(), slots.try_take()
        (True, False)
    """

    __slots__ = ("_slots",)

    def __init__(self, slots: Slots) -> None:
        self._slots: Slots | None = slots

    def release(self) -> None:
        slots = self._slots
        if slots is not None:
            self._slots = None
            slots.release()


class _Interrupted(Exception):
    """A wait before the response started was cut short: ``reason`` is :data:`_OUTCOME`, :data:`_STOPPING`,
    :data:`_DEADLINE` or :data:`_GONE`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Race:
    """One request's waits before its response starts (the condition function, room in the worker's queue, the
    first chunk): the module's stop or the request's deadline end them, and during the first-chunk wait the
    function's outcome does, by cancelling the waiting task once (see :meth:`RestApiModule._interruptible`).

    Stop and deadline are final: one that comes while the task is between waits is kept, and the next wait ends at
    once. ``timer`` is the request's own deadline timer, only when its deadline came out of order (see
    :meth:`RestApiModule._open_race`).
    """

    __slots__ = ("armed", "deadline", "open", "reason", "task", "timer")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.open = True  # in the module's table of races (RestApiModule._close_race takes it out)
        self.armed = False  # the task is inside a wait; cleared before it leaves it
        self.reason: str | None = None
        self.timer: asyncio.TimerHandle | None = None

    def arm(self) -> int:
        """The task enters a wait (the caller checked :attr:`reason` first and clears :attr:`armed` as it leaves);
        the task's cancellation count to give :meth:`refusal`."""
        self.armed = True
        return self.task.cancelling()

    def refusal(self, cancelling: int, cancelled: asyncio.CancelledError,
                make: Callable[[str], Exception] | None = None) -> BaseException:
        """What a wait that ``cancelled`` ended raises (``cancelling``: what :meth:`arm` returned): when the
        cancellation was this race's own, it is withdrawn and the request is refused for the :attr:`reason`
        (:func:`_reason_to_refusal`, or ``make`` of it); when it was someone else's too (a shutdown), ``cancelled``
        itself, to let through.

        Only called from a wait's ``except CancelledError``: a wait that is not cut short pays nothing for it."""
        reason = self.reason
        if reason is None or self.task.uncancel() > cancelling:
            return cancelled
        return _reason_to_refusal(reason) if make is None else make(reason)

    def interrupt(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if self.armed:
                self.task.cancel()

    def outcome_done(self, outcome: asyncio.Future[tuple[Any, Any]]) -> None:
        # Only while the first-chunk wait is on: a callback scheduled before the task left it must not end a
        # later wait.
        if self.armed and self.reason is None and _decides(outcome):
            self.reason = _OUTCOME
            self.task.cancel()


def _abandon_at(deadline: float, started: StartedCall) -> None:
    """A response ended (or its client left) before the function returned: its result is still awaited until the
    request's ``deadline`` (so it is not logged as a result without a caller), then the call is dropped."""
    outcome = started.future
    if not outcome.done():
        timer = asyncio.get_running_loop().call_at(deadline, started.abandon)
        outcome.add_done_callback(lambda _: timer.cancel())


def _reason_to_refusal(reason: str) -> Exception:
    """What a request whose wait was cut short by the module's stop, its deadline or its client's leaving raises."""
    if reason is _STOPPING:
        return _engine_stopping()
    return _ClientGone() if reason is _GONE else _Timeout()


async def _send(response: web.StreamResponse, writer: AbstractStreamWriter, protocol: web.RequestHandler,
                data: memoryview, transport: asyncio.Transport | None, patience: float) -> bool:
    """Write ``data`` and wait for the client to take enough of it; False once it took nothing for ``patience``.

    A write waits until most of the connection's buffer drained, and the kernel takes bytes in steps of its own
    buffers (seconds apart for a client reading 50 KiB/s): a wait that times out goes on while the bytes still
    unsent (:func:`~iii_engine.send_queue.unsent`) went down. The drain waits in a task of its own: cancelling
    aiohttp's drain cancels its shared waiter, and every later drain of the connection then raised CancelledError
    at once."""
    if transport is None or not isinstance(writer, StreamWriter):
        try:
            async with asyncio.timeout(patience):
                await response.write(data)
        except TimeoutError:
            return False
        return True
    await writer.write(data, drain=False)
    if not protocol.writing_paused:
        return True
    return await _taken(asyncio.ensure_future(writer.drain()), transport, patience)


async def _taken(waiting: asyncio.Future[Any], transport: asyncio.Transport, patience: float) -> bool:
    """Wait for ``waiting`` (a write's wait for the client) while the client takes bytes; False once it took nothing
    for ``patience`` (the bytes still unsent did not go down). ``waiting`` is cancelled if not done by then."""
    before = unsent(transport)
    try:
        while True:
            done, _ = await asyncio.wait((waiting,), timeout=patience)
            if done:
                waiting.result()
                return True
            now = unsent(transport)
            if now >= before:
                return False
            before = now
    finally:
        waiting.cancel()  # done: no effect; else the response is cut or the request cancelled


async def _end_body(response: web.StreamResponse, writer: AbstractStreamWriter, transport: asyncio.Transport | None,
                    patience: float, last: bytes = b"") -> bool:
    """End a streamed body (``write_eof``, with ``last``: bytes held back until now) and wait until the connection's
    buffer took its last bytes, on the rule of :func:`_send`; False once the client took nothing for ``patience``.

    Why: the body's last bytes (and its terminating chunk) could sit in the connection's buffer for good when the
    client stopped reading right at the end; aiohttp's close of the connection then waits for them with no bound,
    so the connection and its descriptor stayed taken (counted against ``max_connections``) forever."""
    if transport is None or not isinstance(writer, StreamWriter):
        try:
            async with asyncio.timeout(patience):
                await response.write_eof(last)
        except TimeoutError:
            return False
        return True
    if not await _taken(asyncio.ensure_future(response.write_eof(last)), transport, patience):
        return False
    if not transport.get_write_buffer_size():
        return True  # the usual case: all of it in the kernel's hands, whose own timers bound the rest
    # A high-water mark of 0 pauses the connection's writing until its buffer is empty: its drain waits for exactly
    # that. The marks are put back after, for a next request on the connection.
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0)
    try:
        return await _taken(asyncio.ensure_future(writer.drain()), transport, patience)
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)


class _StreamWatch:
    """What ends a streamed response besides its handler's writer: the function failing, the function returning a
    result (its writer then has :data:`RESULT_GRACE_S` of silence to finish), the function returning null while its
    writer stays silent (``idle``, the module's ``default_timeout``), or the client leaving.

    The grace and the idle bound count only time the stream's loop waits for the writer's next chunk: while a write
    waits for the client to take bytes (:attr:`writing`; ``send_timeout`` bounds that) the writer is not silent, and
    once it closed the loop never waits for it again (the channel's remaining chunks come at once) however slowly the
    client reads. Both are checked at intervals of their length, so a silent writer is cut after one to two of them.

    Why bound a null result's writer: the writer's owner is the function, which has returned; a handler that returns
    without closing its writer left the response open until the SDK's writer object was garbage-collected (at once
    when nothing refers to it, minutes or never once it sits in a reference cycle) or its worker went, holding the
    client and a request slot all along. An SSE feed that returns null keeps its stream by sending something (a
    comment line) at least every ``default_timeout``; one whose function does not return is not bounded.

    Each aborts the response channel's reader end (the request's task, waiting for the next chunk, wakes with
    :class:`ChannelAborted`, and the writer hears its reader left, 4002) and records why; failures also cut the
    client's connection at once (a write waiting for the client wakes too). Callbacks, armed once per stream, not a
    task raced per chunk: the stream's loop pays one attribute store per chunk (:attr:`sent`).
    """

    __slots__ = ("_closed", "_ended", "_function_id", "_grace", "_idle", "_seen", "level", "reader", "sent",
                 "transport", "wake", "why", "writing")

    def __init__(self, reader: ResponseChannel, transport: asyncio.Transport | None, function_id: str,
                 idle: float) -> None:
        self.reader = reader
        self.transport = transport
        self._function_id = function_id
        self._idle = idle
        self.sent = 0  # body bytes handed to the client's connection (the stream's loop keeps it current)
        self.writing = False  # the stream's loop waits for the client to take a chunk (a timed write)
        self.why: str | None = None
        self.level = logging.WARNING
        self._grace: asyncio.TimerHandle | None = None
        self._seen = -1
        self._ended = False
        self._closed = False  # the writer closed: the stream's loop judges the outcome itself (writer_closed)
        self.wake: Callable[[], None] | None = None  # told when the client leaves (the loop's wait for the outcome)

    def outcome_done(self, outcome: asyncio.Future[tuple[Any, Any]]) -> None:
        """The function's outcome came while its response streams: an error cuts the response, a result gives the
        writer a grace to finish, a null result (a streaming handler's usual return) leaves the stream to a writer
        that keeps sending."""
        if self._closed:
            return
        result, error = _outcome(outcome, self._function_id)
        if error is not None:
            if isinstance(error, Mapping):
                if error.get("code") == "invocation_timeout":
                    # The call's time limit says nothing of its stream: a handler may stream for longer than
                    # invocation_timeout_ms (an SSE feed), its writer still open.
                    return
                error = error.get("message", "")
            self._stop(f"the function failed after its streamed response started: {' '.join(str(error).split())[:300]}",
                       logging.WARNING, cut=True)
        elif self._grace is None:
            self._silent(RESULT_GRACE_S if result is not None else self._idle, result is not None)

    def _silent(self, bound: float, result: bool) -> None:
        # Only a loop that waited for the writer's next chunk all along, none handed on since the last look, means
        # a silent writer. Counting the client's bytes taken instead cut a download to a 200 KiB/s client after
        # 4.3 MB (the kernel's buffer drains in steps: the connection's buffer sat still for 2 s).
        if self.writing or self.sent != self._seen:
            self._seen = self.sent
            self._grace = asyncio.get_running_loop().call_later(bound, self._silent, bound, result)
            return
        returned = "a result" if result else "null"
        self._stop(f"the function returned {returned} after its streamed response started and its writer sent "
                   f"nothing more for {bound:g} s", logging.WARNING, cut=True)

    def connection_lost(self) -> None:
        """The client's connection closed (see :class:`_BoundedServer`)."""
        self._stop("the client closed the connection during the streamed response", logging.INFO, cut=False)
        if self.wake is not None:
            self.wake()

    def writer_closed(self) -> None:
        """The writer closed the body: from here the stream's loop waits for the function's outcome and judges it
        itself (see :meth:`RestApiModule._after_close`), so an outcome no longer cuts the response from here and
        the writer's silence means nothing; the client leaving still ends it."""
        self._closed = True
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _stop(self, why: str, level: int, *, cut: bool) -> None:
        if self.why is not None or self._ended:
            return
        self.why, self.level = why, level
        self.reader.abort()
        if cut and self.transport is not None:
            reset_transport(self.transport)  # a reset, not an end: HTTP/1.0's body ends at the connection's end

    def close(self) -> None:
        """The stream ended: nothing cuts it any more (an outcome's callback may still be scheduled), no grace timer
        is left behind."""
        self._ended = True
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None


class _HttpTriggers:
    """The ``http`` trigger type: installs and removes routes."""

    def __init__(self, routes: RouteTable) -> None:
        self._routes = routes

    async def register(self, trigger: TriggerInfo) -> None:
        route = parse_http_trigger(trigger.id, trigger.function_id, trigger.config)
        replaced = self._routes.add(route)
        if replaced is not None:
            # (a path that differs in its parameters' names only is the same route: it matches the same URLs)
            as_path = f" as {replaced.api_path}" if replaced.api_path != route.api_path else ""
            log.info("http route %s %s now served by %s (trigger %s); %s (trigger %s%s) serves it again once that "
                     "trigger goes", route.method, route.api_path, route.function_id, route.trigger_id,
                     replaced.function_id, replaced.trigger_id, as_path)

    async def unregister(self, trigger: TriggerInfo) -> None:
        self._routes.remove(trigger.id)


class RestApiModule(EngineModule):
    """HTTP triggers on their own port.

    Example:
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with Engine(config=EngineConfig(modules=[ModuleSpec(
        ...             "modules::api::RestApiModule", {"port": 0})])) as engine:
        ...         print(engine.module("http_api").port)
    """

    name = "http_api"
    class_names = ("modules::api::RestApiModule",)
    has_listener = True

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = ApiSettings.parse(config)
        self.routes = RouteTable()
        self._runner: web.ServerRunner | None = None
        self._limit: Slots | None = None
        # the slot of each request taking one, by the request's id, until the request ends
        self._slots_held: dict[int, _HeldSlot] = {}
        # Set when the module stops: every request still waiting for its handler's answer is told at once.
        self._stopping: asyncio.Future[None] | None = None
        # Requests before their response starts (stop interrupts them), in deadline order: every request's deadline
        # is default_timeout after it came, so one timer at the oldest deadline serves them all (see _open_race).
        self._races: dict[_Race, None] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._write_watch: asyncio.TimerHandle | None = None  # see _watch_writes
        self._latest_deadline = float("-inf")
        self._budget = BodyBudget(self.settings.max_buffered_bytes)
        self._background: set[asyncio.Task[Any]] = set()
        self.port = self.settings.port
        self.in_flight = 0  # requests holding a concurrency permit (ours; tests and metrics read it)
        self.receiving = 0  # requests whose body is still arriving (they hold no permit)
        self.abandoned = 0  # requests whose client left while they waited for a permit (never invoked)
        self.gone = 0  # requests whose client left while their handler was about to stream (see _respond)
        # Streamed responses in progress: they end only when their handler closes its writer (an SSE stream may
        # never), so stop() cuts them instead of letting aiohttp wait out its two 60 s shutdown phases.
        self._streaming: dict[ResponseChannel, web.BaseRequest] = {}
        self._server: _BoundedServer | None = None
        #: connections refused past ``max_connections`` (since start); logged rate-limited: any client can connect
        #: as fast as it likes
        self.refused_connections = 0
        self._refused_log = LossLog(self._log_refused, SKIP_LOG_INTERVAL_S)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of request bodies currently held in memory (bounded by ``max_buffered_bytes``)."""
        return self._budget.used

    @property
    def connections(self) -> int:
        """Client connections open now (bounded by ``max_connections``)."""
        return self._server.open_connections if self._server is not None else 0

    def _refuse_connection(self) -> None:
        self.refused_connections += 1
        self._refused_log.lost("refused", "")

    def _log_refused(self, counts: Mapping[str, int], _latest: str | None) -> None:
        log.warning("REST API: %d connections refused with 503 since the last warning (%d in all): %d open, "
                    "max_connections %d", counts["refused"], self.refused_connections, self.connections,
                    self.settings.max_connections)

    @property
    def base_url(self) -> str:
        """``http://host:port`` to send requests to (wildcard binds are reached through loopback)."""
        return f"http://{url_host(self.settings.host)}:{self.port}"

    def listen_address(self) -> tuple[str, int] | None:
        """Where the REST API is to listen (see :meth:`EngineModule.listen_address`)."""
        return self.settings.host, self.settings.port

    async def start(self) -> None:
        """Register the ``http`` trigger type and open the HTTP listener."""
        self._limit = Slots(self.settings.concurrency_request_limit)
        self._stopping = asyncio.get_running_loop().create_future()
        self._latest_deadline = float("-inf")  # deadlines are this loop's clock
        self.services.register_trigger_type("http", "HTTP API trigger", _HttpTriggers(self.routes))
        # aiohttp's keep-alive timer also runs from the moment a connection opens and closes it if the request
        # headers are still incomplete when it fires: exactly a header deadline.
        # Bodies are decoded by _receive (BodyDecoder), whole or not at all: aiohttp's decoding took a gzip body cut
        # before its end for whole.
        server = _BoundedServer(self._handle, max_connections=self.settings.max_connections,
                                refused=self._refuse_connection, access_log=None, auto_decompress=False,
                                keepalive_timeout=self.settings.header_timeout_ms / 1000, lingering_time=LINGER_S,
                                logger=_server_log)
        self._server = server
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._write_watch = asyncio.get_running_loop().call_later(self.settings.send_timeout_ms / 1000,
                                                                  self._watch_writes)
        log.info("REST API listening on %s", self.base_url)

    async def stop(self) -> None:
        """Answer requests still waiting for their handler (503), close the listener, cut streamed responses still
        in progress and finish background work."""
        if self._stopping is not None and not self._stopping.done():
            self._stopping.set_result(None)  # without this, the listener's cleanup waits out their default_timeout
        for race in list(self._races):
            race.interrupt(_STOPPING)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._write_watch is not None:
            self._write_watch.cancel()
            self._write_watch = None
        for reader, request in list(self._streaming.items()):
            reader.abort()  # a handler waiting for its next chunk: the stream ends as aborted
            # a bodyless answer is whole once its head went out: not reset
            if request.transport is not None and not _bodyless(request, reader.status):
                reset_transport(request.transport)  # a handler waiting for a client that stopped reading
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._refused_log.close()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _watch_writes(self) -> None:
        """Cut the connections whose client took nothing of a whole answer for ``send_timeout`` (one to two of it:
        this runs at that interval); streamed responses are timed as they are written (see :meth:`_stream`).

        Why: aiohttp writes a returned response and then waits with no bound for the client to take what did not
        fit the connection's buffer, and closing a connection waits for its buffered bytes just as long. A client
        that sent a request and never read kept its connection (counted against ``max_connections``) and the answer
        in memory for good: a 3 MB JSON answer's connection was still open 8 s past a 500 ms ``send_timeout``.
        Timing each whole answer as it is written cost 2 % more instructions per request; this costs none."""
        server = self._server
        if server is not None:
            for handler in server.stalled_writes():
                transport = handler.transport
                assert transport is not None
                log.info("REST API: a client read nothing of its answer's last %d bytes for %d ms (send_timeout); "
                         "connection cut", transport.get_write_buffer_size(), self.settings.send_timeout_ms)
                reset_transport(transport)
        self._write_watch = asyncio.get_running_loop().call_later(self.settings.send_timeout_ms / 1000,
                                                                  self._watch_writes)

    # -- request handling ------------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        cors = self.settings.cors
        method = request.method
        if method == "OPTIONS" and origin is not None and "Access-Control-Request-Method" in request.headers:
            wanted = request.headers["Access-Control-Request-Method"]
            headers = cors.headers(origin, True, request.headers.get("Access-Control-Request-Headers"))
            if not headers or not cors.allows_method(wanted):
                return web.Response(status=403, text="CORS request not allowed")
            return web.Response(status=200, headers=headers)
        cors_headers = cors.headers(origin, False, None) if origin is not None else {}
        try:
            match = self.routes.match(method, request.raw_path.split("?", 1)[0])
        except BadPath as exc:
            return _json_response(400, {"error": str(exc)}, cors_headers)
        if match is None:
            return web.Response(status=404, text="Not Found", headers=cors_headers)
        assert self._limit is not None
        # most requests have no body: nothing to claim, no claim to make
        claim = _Claim(self._budget) if request.body_exists else None
        try:
            self.receiving += 1
            try:
                raw = await self._receive(request, claim)
            finally:
                self.receiving -= 1
            if claim is not None and len(raw) > _JSON_CLAIM_FROM and \
                    "application/json" in request.headers.get("Content-Type", "").lower():
                self._claim_decoded(claim, raw)
            waited = not self._limit.try_take()
            if waited:
                await self._take_slot()  # only now: a slow client's wait for its body holds no slot
            self.in_flight += 1
            # (by the request's id: the stream frees it early, see _stream)
            self._slots_held[id(request)] = slot = _HeldSlot(self._limit)
            try:
                transport = request.transport
                if transport is None or transport.is_closing() or (waited and _left_unprobed(request)):
                    # The client left while it waited for the slot: nobody would read the answer, so the handler
                    # is not invoked (the response returned here is never sent).
                    log.info("HTTP %s %s: client gone before a slot freed; not invoked", request.method,
                             request.path)
                    self.abandoned += 1
                    return web.Response(status=499)
                if self._stopping is None or self._stopping.done():
                    raise _engine_stopping()
                # the request's deadline and its errors' answers here, not in a coroutine of their own: each level
                # of await costs per request
                deadline = asyncio.get_running_loop().time() + self.settings.default_timeout_ms / 1000
                try:
                    response = await self._run(request, match, raw, deadline)
                except EngineError as exc:
                    response = _error_response(f"{exc.code}: {exc.message}")
                except _Timeout:
                    response = _json_response(504, {"error": "Request timed out"})
                    log.warning("HTTP %s %s timed out after %d ms", request.method, request.path,
                                self.settings.default_timeout_ms)
                except _ClientGone:
                    # never sent: the connection is gone
                    log.info("HTTP %s %s: client gone before the streamed response started; its handler's writer "
                             "was told the reader left", request.method, request.path)
                    self.gone += 1
                    return web.Response(status=499)
                if cors_headers and not response.prepared:
                    response.headers.update(cors_headers)
                return response
            finally:
                self.in_flight -= 1
                del self._slots_held[id(request)]
                slot.release()
        except _Refused as exc:
            log.info("HTTP %s %s refused with %d: %s", request.method, request.path, exc.status, exc.message)
            response = _json_response(exc.status, {"error": exc.message}, {**exc.headers, **cors_headers})
            response.force_close()  # the rest of the body (if any) is not wanted; do not reuse the connection
            return response
        finally:
            if claim is not None:
                claim.release()

    def _claim_decoded(self, claim: _Claim, raw: bytearray) -> None:
        """Claim what a JSON body costs while it is decoded into the handler's payload and encoded into its call:
        :data:`JSON_CLAIM_FACTOR` times its bytes, plus 64 bytes an object or list and 16 a value, beyond the raw
        bytes claimed as they came.

        Why: only the raw bytes counted, while decoding is what takes the memory: three 64 MiB JSON bodies of
        numbers took the engine to 2.5 GB (393 MB as octet-stream); now one such body is decoded at a time, the
        others answered 503 (retry later). Not the registration frames' ``retained_estimate``, which counts every comma
        at 56 bytes and every character past the BMP at 8x the whole text, and refused realistic bodies (a 13.6 MiB
        CSV string at 320 MB, decoded in 12). Decoded JSON takes 1 to ~24 times its text; the claim errs high for
        numbers and containers, near for strings: a bound on how many large bodies are decoded at once. A body whose
        claim alone passes ``max_buffered_bytes`` is a 413 naming the way around it.
        """
        # Containers and values are what decoding multiplies: an object or list ~64 bytes each, a value ~16 more
        # than its text (counted in strings too, at C speed: it errs high for strings full of commas or brackets).
        # A flat 4x let `[{},{},…]`, 24x its bytes decoded, take 6x the budget.
        decoded = (JSON_CLAIM_FACTOR * len(raw) + 64 * (raw.count(b"{") + raw.count(b"["))
                   + 16 * raw.count(b","))
        capacity = self._budget.capacity
        if decoded > capacity:
            raise _Refused(413, f"a JSON body of {len(raw)} bytes is claimed at {decoded} bytes while it is decoded, "
                                f"more than request bodies may hold in memory ({capacity} bytes, max_buffered_bytes): "
                                "send it with another Content-Type (application/octet-stream) and read it from the "
                                "request_body channel")
        claim.add(decoded - len(raw))

    async def _take_slot(self) -> None:
        """One of the ``concurrency_request_limit`` slots, within ``slot_timeout``; else 503 (retry later)."""
        assert self._limit is not None
        if not self._limit.locked():  # the usual case: no timer
            await self._limit.take()
            return
        timeout_ms = self.settings.slot_timeout_ms
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await self._limit.take()
        except TimeoutError:
            raise _Refused(503, f"all {self.settings.concurrency_request_limit} request slots stayed busy for "
                                f"{timeout_ms} ms (slot_timeout); retry later", {"Retry-After": "1"}) from None

    async def _receive(self, request: web.BaseRequest, claim: _Claim | None) -> bytearray:
        """The whole request body, within ``max_body_bytes``, ``body_timeout`` and the memory budget.

        A stated Content-Length over the limit is refused before one body byte is read; every body is claimed
        against the memory budget as its bytes arrive (decoded), and refused once past the limit. Why not claim a
        stated length up front: four connections stating 64 MiB and sending nothing held the whole budget for
        ``body_timeout``, and every other request with a body got 503, again and again, for the price of four
        request heads; now holding the budget costs its bytes.
        """
        if claim is None or not request.body_exists:  # no Content-Length or Transfer-Encoding: nothing to read
            return bytearray()
        limit = self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise _Refused(413, f"request body of {length} bytes is larger than the limit of {limit} bytes")
        try:
            # several header lines read as one list (not decoded): the first alone would pass gzip bytes on as plain
            decoder = BodyDecoder.for_encoding(", ".join(request.headers.getall("Content-Encoding", ())) or None)
        except BodyError as exc:  # before 100 Continue: the client need not send a body refused unread
            raise _Refused(415, f"request body not read: {exc}") from None
        if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = bytearray()
        timeout_ms = self.settings.body_timeout_ms
        # The bytes as sent are bounded too: empty deflate blocks or gzip members decode to nothing.
        wire, wire_limit = 0, wire_bound(limit)
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                while chunk := await request.content.readany():
                    wire += len(chunk)
                    piece = decoder.feed(chunk, limit - len(body))
                    if len(body) + len(piece) > limit or wire > wire_limit:
                        raise _Refused(413, f"request body is larger than the limit of {limit} bytes")
                    # Beyond a stated length only when decoded from a Content-Encoding: memory is what counts.
                    claim.add(max(0, len(body) + len(piece) - claim.size))
                    body += piece
                body += decoder.finish()
        except TimeoutError:
            raise _Refused(408, f"request body not received within {timeout_ms} ms (body_timeout); got "
                                f"{len(body)} bytes") from None
        except BodyError as exc:
            # (before: aiohttp's decoding took a gzip body cut before its end for whole, and the handler got the part)
            raise _Refused(400, f"request body not read whole: {exc}") from None
        except (_Refused, asyncio.CancelledError):
            raise
        except Exception as exc:  # the client dropped or broke the framing: never hand on a partial body
            if isinstance(exc, RequestPayloadError):
                setattr(exc, _ANSWERED, True)
            raise _Refused(400, f"request body incomplete after {len(body)} bytes: {exc!r}") from None
        return body

    async def _run(self, request: web.BaseRequest, match: RouteMatch, raw: bytearray,
                   deadline: float) -> web.StreamResponse:
        # One coroutine for the race's lifetime and the request's channels: each level of await costs per request.
        race = self._open_race(deadline)
        try:
            route = match.route
            headers = request.headers
            body: Any = None
            if raw and "application/json" in headers.get("Content-Type", "").lower():
                with contextlib.suppress(ValueError):
                    body = loads(bytes(raw))
            path, method = route.registered_path, route.method
            seen = {k.lower(): v if v.isascii() else header_text(v) for k, v in headers.items()}
            if "content-encoding" in seen:
                # The handler gets the body _receive decoded: headers that describe it as it was sent would have it
                # decode it again, or take the decoded bytes for cut off at the sent length.
                del seen["content-encoding"]
                if "content-length" in seen:
                    seen["content-length"] = str(len(raw))
            payload = {
                "path_params": match.path_params or {},  # a static route's match is shared: never hand on its dict
                # repeated keys: last wins; no query string, nothing to parse
                "query_params": {k: v for k, v in request.query.items()} if request.query_string else {},
                "headers": seen,
                "path": path,
                "method": method,
                "body": body,
                "trigger": {"type": "http", "path": path, "method": method},
            }
            if route.condition_function_id is not None:
                try:
                    passed = await self._interruptible(race, self.services.condition_passes(
                        route.condition_function_id, dict(payload), wait_if_busy=False), None)
                except _Interrupted as exc:
                    raise _reason_to_refusal(exc.reason) from None
                except CallNotSent as exc:  # its worker left before the call reached it: it did not decide
                    return _json_response(503, {"error": exc.message, "code": exc.code}, {"Retry-After": "1"})
                except EngineError as exc:
                    if exc.code not in UNDECIDED_CODES:
                        raise
                    # it did not decide: its worker refused it for being busy (503, as the handler), the call was
                    # stopped unanswered (its worker left after the call reached it, the engine stopping) or timed
                    # out (504), or nobody serves the condition now (its worker restarting): answered as the
                    # handler's would be (it said 422 "Request condition not met", a decision never made)
                    return _failure(exc.body())  # (CallUnwritable's body keeps its type)
                if not passed:
                    return _json_response(422, {"error": "Request condition not met", "skipped": True})
            # Both channels are created on the relay (docs/protocol.md#channels), where they stay reserved until the
            # handler attaches to one over its own socket; this module's ends are in-process, and its response end
            # opens only then (see ResponseChannel.watch).
            relay = self.services.channels
            if isinstance(relay, ChannelRelay):  # the engine's own relay: both at once, the body queued with them
                try:
                    (body_id, _, body_key), (response_id, writer_key, reader_key) = relay.reserve_pair(
                        raw, CHUNK_SIZE)
                except TooManyChannels as exc:
                    raise _Refused(503, f"{exc}; retry later", {"Retry-After": "1"}) from None
            else:
                body_id, _, body_key = self._new_channel(raw, None)
                response_id, writer_key, reader_key = self._new_channel(None, body_id)
            # The channel holds its own copy now; the body is claimed once against max_buffered_bytes: hold it once.
            raw.clear()
            payload["request_body"] = {"channel_id": body_id, "access_key": body_key, "direction": "read"}
            payload["response"] = {"channel_id": response_id, "access_key": writer_key, "direction": "write"}
            reader = ResponseChannel("", {"channel_id": response_id, "access_key": reader_key, "direction": "read"},
                                     relay, MAX_CONTROL_FRAMES, MAX_HEADER_BYTES)
            try:
                # Start the invocation (no task: its pending future is raced directly), answer, and settle the
                # call, in this coroutine (one level less per request). Every wait before the response starts
                # (room in the worker's queue included) ends at the request's deadline; a streamed body, once
                # started, runs until the handler closes its writer.
                # Interruptible (_interruptible's wait, written out: it runs on every request): a worker that
                # stopped reading keeps its queue full until the deadline, and the module's stop must not wait for
                # that. A call cut short this way left the pending table as it was cancelled.
                if race.reason is not None:
                    raise _reason_to_refusal(race.reason)
                race.armed = True  # race.arm(), written out
                cancelling = race.task.cancelling()
                try:
                    started = await self.services.start_invocation(route.function_id, payload)
                except EngineError as exc:
                    return _error_response(exc.message)
                except asyncio.CancelledError as cancelled:
                    raise race.refusal(cancelling, cancelled) from None
                finally:
                    race.armed = False
                outcome = started.future
                try:
                    if not outcome.done():
                        # Usually nobody attached to the response channel yet: wait for the outcome, or for the
                        # handler to attach (then _respond's first-chunk race starts) without opening our end (see
                        # ResponseChannel.watch). _outcome_of's wait, written out: one coroutine less per request.
                        if race.reason is not None:  # the stop or the deadline came between waits
                            raise _reason_to_refusal(race.reason)
                        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                        def wake(_: object = None) -> None:
                            if not done.done():
                                done.set_result(None)

                        if reader.watch(wake):
                            # A worker's call settles `done` as its result comes in, one loop pass sooner than
                            # the outcome's done callback would (Started.hook); a built-in's has only the latter.
                            hooked = started if type(started) is Started and started.hook(wake) else None
                            if hooked is None:
                                outcome.add_done_callback(wake)
                            race.armed = True  # race.arm(), written out
                            cancelling = race.task.cancelling()
                            try:
                                await done
                            except asyncio.CancelledError as cancelled:
                                raise race.refusal(cancelling, cancelled) from None
                            finally:
                                race.armed = False
                                if hooked is not None:
                                    hooked.hook(None)
                                else:
                                    outcome.remove_done_callback(wake)
                    # the usual answer is decided here, without _respond's coroutine
                    head: web.StreamResponse | bytes | None = _decided(outcome, route.function_id) if outcome.done() \
                        else None
                    if head is None:
                        head = await self._respond(race, request, reader, outcome, route.function_id)
                except _ClientGone:
                    _abandon_at(race.deadline, started)
                    raise
                except BaseException:  # timed out or cancelled: nobody waits for the result any more
                    started.abandon()
                    raise
                finally:
                    self._close_race(race)
                if isinstance(head, web.StreamResponse):
                    return head
                try:
                    response = await self._stream(request, reader, head, outcome, route.function_id)
                except BaseException:
                    started.abandon()
                    raise
                _abandon_at(race.deadline, started)
                return response
            finally:
                if reader.local:  # nothing to wait for: drop both channels now
                    relay.discard(body_id)
                    relay.discard(response_id)
                else:
                    self._spawn(self._finish(reader, body_id, response_id))
        finally:
            if race.open:  # not closed yet by the response's start
                self._close_race(race)

    async def _respond(self, race: _Race, request: web.BaseRequest, reader: ResponseChannel,
                       outcome: asyncio.Future[tuple[Any, Any]], function_id: str) -> web.StreamResponse | bytes:
        """The race of docs/guides/engine.md#modules: the first body chunk or the function's return, whichever comes
        first; the response, or the first chunk of a streamed one. A null result does not decide it: the response
        then comes from the channel.

        Called once the outcome alone did not decide (:func:`_decided`): the handler attached to the response
        channel before its function returned, or the function returned null.

        A client that leaves during the first-chunk wait ends it (:class:`_ClientGone`) and the handler's writer
        hears its reader left (4002). Why: aiohttp tells a request nothing of a client gone while it neither reads
        nor writes, so such a request held its slot and its handler until the first chunk or ``default_timeout``:
        an SSE feed waiting for its first event, left by clients that reconnect, filled every slot.
        """
        chunk: bytes | None = None
        aborted: ChannelAborted | None = None
        lost = self._server.on_lost if self._server is not None else None
        protocol = request.protocol
        connection = protocol if isinstance(protocol, _Connection) else None
        if lost is not None:
            if request.transport is None:  # it left during an earlier wait: no close is coming to say so
                race.interrupt(_GONE)
            else:
                lost[protocol] = partial(race.interrupt, _GONE)
                # An HTTP/1.0 client that ends its side may have left or only half-closed (no probe can tell): its
                # handler's writer is told the reader left, so a stream ends, while a result the function returns is
                # still answered (cut at once, a half-closed client waiting for a JSON answer got nothing)
                if _left_unprobed(request):
                    self._writer_told(reader)
                elif connection is not None:
                    connection.on_input_ended = partial(self._writer_told, reader, connection)
        try:
            chunk = await self._first_chunk(race, reader, outcome)
        except _Interrupted as exc:
            if exc.reason is _GONE:
                reader.abort()
            if exc.reason is not _OUTCOME:
                raise _reason_to_refusal(exc.reason) from None
        except ResponseHeadersTooLarge as exc:
            return _bad_gateway(str(exc))
        except ChannelAborted as exc:
            aborted = exc
        finally:
            if lost is not None:
                lost.pop(protocol, None)
            if connection is not None:
                connection.on_input_ended = None
        if chunk is not None:
            return chunk
        # no body chunk came first: the function's outcome decides
        if not outcome.done():
            await self._outcome_of(race, outcome)
        result, error = _outcome(outcome, function_id)
        if error is not None:
            return _failure(error)
        if result is not None:
            return result_response(result)
        if aborted is not None:
            return _error_response(str(aborted))
        if reader.head_error is not None:
            return _bad_gateway(reader.head_error)
        return _empty_response(reader.status, reader.headers, request.method == "HEAD")

    def _writer_told(self, reader: ResponseChannel, connection: _Connection | None = None) -> None:
        """An HTTP/1.0 client ended its side while its streamed answer waited for its first chunk: the handler's
        writer hears its reader left (4002), counted as ``gone`` (once: the hook is taken off as it runs)."""
        if connection is not None:
            connection.on_input_ended = None
        self.gone += 1
        reader.abort()

    async def _outcome_of(self, race: _Race, outcome: asyncio.Future[tuple[Any, Any]]) -> None:
        """Wait until ``outcome`` is done (whether it failed or was cancelled: :func:`_outcome` reads that), within
        the request's deadline and the module's stop."""
        if race.reason is not None:  # the stop or the deadline came while the task was between waits
            raise _reason_to_refusal(race.reason)
        done: asyncio.Future[None] = race.task.get_loop().create_future()

        def wake(_: object = None) -> None:
            if not done.done():
                done.set_result(None)

        outcome.add_done_callback(wake)
        cancelling = race.arm()  # _interruptible's wait, written out
        try:
            await done
        except asyncio.CancelledError as cancelled:
            raise race.refusal(cancelling, cancelled) from None
        finally:
            race.armed = False
            outcome.remove_done_callback(wake)

    async def _first_chunk(self, race: _Race, reader: ResponseChannel,
                           outcome: asyncio.Future[tuple[Any, Any]]) -> bytes | None:
        """The response channel's first body chunk (``None``: closed without one), read by this request's own task;
        :class:`_Interrupted` as soon as ``outcome`` decides the response, the module stops or the deadline comes.

        Why not a reader task raced with ``asyncio.wait``: that task cost ~35 us CPU per request, a third of the
        engine's cost over a bare HTTP-to-worker relay (bench/http_api.py). The interruption is the pattern
        ``asyncio.timeout`` uses: a callback cancels the waiting task, which catches the cancellation at its one
        await and withdraws it with ``uncancel()``; any other cancellation (a shutdown) still propagates.
        """
        return await self._interruptible(race, reader.first_chunk(), outcome)

    async def _interruptible(self, race: _Race, wait: Awaitable[_T],
                             outcome: asyncio.Future[tuple[Any, Any]] | None) -> _T:
        """Await ``wait`` in the request's task; :class:`_Interrupted` as soon as the module stops, the request's
        deadline comes or ``outcome`` (if given) decides the response (see :meth:`_first_chunk`)."""
        if race.reason is not None:  # the stop or the deadline came while the task was between waits
            if isinstance(wait, Coroutine):
                wait.close()
            raise _Interrupted(race.reason)
        if outcome is not None:
            outcome.add_done_callback(race.outcome_done)
        cancelling = race.arm()
        try:
            return await wait
        except asyncio.CancelledError as cancelled:
            raise race.refusal(cancelling, cancelled, _Interrupted) from None
        finally:
            race.armed = False
            if outcome is not None:
                outcome.remove_done_callback(race.outcome_done)

    def _open_race(self, deadline: float) -> _Race:
        """The current request's :class:`_Race`, ended with :data:`_DEADLINE` at ``deadline``.

        Why not ``asyncio.timeout_at`` per request: its timer and context manager cost more than the rest of the
        race, and requests come with their deadlines in order (each is ``default_timeout`` after its arrival), so
        one timer at the oldest deadline (:meth:`_expire_due`) serves all of them, as the channel relay's attach
        deadlines do. A deadline earlier than one already queued (a caller passing its own) gets a timer of its own.
        """
        task = asyncio.current_task()
        assert task is not None
        race = _Race(task, deadline)
        loop = asyncio.get_running_loop()
        if deadline >= self._latest_deadline:
            self._latest_deadline = deadline
            if self._sweep is None:
                self._sweep = loop.call_at(deadline, self._expire_due)
        else:
            race.timer = loop.call_at(deadline, race.interrupt, _DEADLINE)
        self._races[race] = None
        return race

    def _close_race(self, race: _Race) -> None:
        """The request's response started or it ended: its deadline and the module's stop no longer cut it."""
        race.open = False
        self._races.pop(race, None)
        if race.timer is not None:
            race.timer.cancel()
            race.timer = None

    def _expire_due(self) -> None:
        """The oldest queued deadline came: end every request whose deadline passed, re-arm for the next."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due: list[_Race] = []
        for race in self._races:
            if race.timer is not None:  # out of order: its own timer ends it
                continue
            if race.deadline > now:
                self._sweep = loop.call_at(race.deadline, self._expire_due)
                break
            due.append(race)
        for race in due:
            del self._races[race]
            race.interrupt(_DEADLINE)

    async def _stream(self, request: web.BaseRequest, reader: ResponseChannel, first: bytes,
                      outcome: asyncio.Future[tuple[Any, Any]], function_id: str) -> web.StreamResponse:
        """Send a streamed response. A Content-Length the handler set is kept (a download's size) and held to:
        a body that goes past it or ends short of it cuts the connection, so the client sees an incomplete
        response rather than a silently truncated one, or one it waits for until the connection times out.

        The function failing meanwhile cuts it too, a result it returns gives its writer :data:`RESULT_GRACE_S`
        without a chunk to finish, a null result leaves it ``default_timeout`` of silence at a time, and a client
        that leaves frees the request at once, its handler's writer told the reader left (4002): see
        :class:`_StreamWatch`. The body's end waits for the client to take its last bytes, within ``send_timeout``
        (:func:`_end_body`)."""
        # A response that has no body (RFC 9110 6.4.1: to HEAD, 204, 304): what the handler streams is read and
        # dropped. Written, it went out with no framing after the head, and a client reusing the connection took
        # it for the answer to its next request (a handler streaming "HTTP/1.1 200 OK…" forged that answer).
        bodyless = _bodyless(request, reader.status)
        skip = _STREAM_HEADER_SKIP | _FRAMING_HEADERS if reader.status == 204 else _STREAM_HEADER_SKIP
        headers = {k: v for k, v in reader.headers.items() if k.lower() not in skip}
        problem = reader.head_error or head_problem(reader.status, headers)
        try:
            declared = declared_length(headers)
        except ValueError as exc:
            problem = problem or str(exc)
        if problem is not None:
            return _bad_gateway(problem)
        if bodyless:
            declared = None  # it states the size of a body not sent: nothing to hold the stream to
        response = web.StreamResponse(status=reader.status, headers=headers)
        if declared is None and not bodyless and request.version < HttpVersion11:
            # HTTP/1.0 has no chunks: the body ends where the connection does. aiohttp leaves such a connection
            # open for a keep-alive client, which then waited for the close (header_timeout, 30 s) and read the
            # next pipelined answer as part of this body.
            response.force_close()
        cors = self.settings.cors.headers(request.headers.get("Origin"), False, None)
        response.headers.update(cors)
        sent = 0
        next_chunk, write, writer = reader.next_chunk, response.write, request.writer
        transport = request.transport
        send_timeout = self.settings.send_timeout_ms / 1000
        # A write waits for the client only once the connection's buffer passed its high-water mark (aiohttp drains
        # then). A chunk that cannot take it there from an empty buffer needs no timer (per-chunk cost); any other
        # write gets one: a frame of the SDK's 1 MiB into an empty buffer waited for a client that never read
        # with no bound. The first write carries the response head too: always timed.
        room = -1
        high = transport.get_write_buffer_limits()[1] - _CHUNK_FRAMING if transport is not None else -1
        # a bodyless answer is whole once its head is out: nothing that ends its handler's stream cuts it
        watch = _StreamWatch(reader, None if bodyless else transport, function_id,
                             self.settings.default_timeout_ms / 1000)
        outcome.add_done_callback(watch.outcome_done)
        lost = self._server.on_lost if self._server is not None else {}
        protocol = request.protocol
        lost[protocol] = watch.connection_lost
        self._streaming[reader] = request
        try:
            # in the try: a client gone before the head went out is a ConnectionError like one gone later (it
            # logged a traceback any client could make at will)
            await response.prepare(request)
            chunk: bytes | None = first
            held = b""  # a Content-Length body's last byte: sent with the body's end, once the function returned
            while chunk is not None:
                sent += len(chunk)
                if bodyless:
                    watch.sent = sent
                    chunk = await next_chunk()
                    continue
                if declared is not None and sent >= declared:
                    if sent > declared:
                        return self._cut(request, response, f"the handler sent more than the {declared} bytes its "
                                                            f"Content-Length states")
                    # Its client takes the body for whole at its last byte: held back until the function's
                    # outcome says it did not fail (see _after_close)
                    held, chunk = chunk[-1:], chunk[:-1]
                if chunk and (len(chunk) > room or transport is None or transport.get_write_buffer_size()):
                    # This write may wait for the client to read: a client that stopped reading would otherwise
                    # hold its slot as long as the stream runs. Timed per slice (SEND_SLICE): the rule is "took
                    # nothing for send_timeout", not "took a whole frame within it".
                    watch.writing = True
                    view = memoryview(chunk)
                    for at in range(0, len(view), SEND_SLICE):
                        if not await _send(response, writer, protocol, view[at:at + SEND_SLICE], transport,
                                           send_timeout):
                            return self._cut(request, response, f"the client read nothing for "
                                                                f"{self.settings.send_timeout_ms} ms (send_timeout)")
                    watch.writing = False
                elif chunk:  # (empty: its one byte is held back; an empty write would end the chunked body)
                    await write(chunk)
                room = high
                watch.sent = sent
                chunk = await next_chunk()
            if declared is not None and sent < declared:
                return self._cut(request, response, f"the handler closed its body after {sent} of the {declared} "
                                                    f"bytes its Content-Length states")
            watch.writing = True  # the writer closed: a wait for the client from here on is not its silence
            watch.writer_closed()
            if watch.why is not None:  # the outcome (or the client) ended the stream as its end came in
                raise ChannelAborted(watch.why)
            if not bodyless and not outcome.done():
                # The handler's body is whole; what it does until it returns is its own work: its slot is free for
                # the next request (held, 4 requests with 2 s of work after their close took all of a limit of 4,
                # and 4 more got 503, where before the wait they were served at once)
                held_slot = self._slots_held.get(id(request))
                if held_slot is not None:
                    held_slot.release()
            failure = None if bodyless else await self._after_close(outcome, function_id, watch, transport,
                                                                     send_timeout)
            if watch.why is not None or self._stopping is None or self._stopping.done():
                # the client left (one INFO line), or the module's stop cut the response (it reset the connection)
                raise ChannelAborted(watch.why or "the engine is stopping")
            if failure is not None and failure is not _STALLED:
                return self._cut(request, response, failure)
            if failure is _STALLED or not await _end_body(response, writer, transport, send_timeout, held):
                # Everything was handed to the connection; the client stopped reading at its end: nobody at fault
                # here, the one line says why the connection went.
                log.info("HTTP %s %s: the client read nothing of the response's last bytes for %d ms (send_timeout) "
                         "(%d bytes sent); connection cut", request.method, request.path,
                         self.settings.send_timeout_ms, sent)
                if transport is not None:
                    # a reset: asyncio's buffer (up to ~64 KiB) is thrown away, and an HTTP/1.0 client would take a
                    # plain close for the body's end
                    reset_transport(transport)
                return response
        except ChannelAborted as exc:
            if watch.why is not None:
                log.log(watch.level, "HTTP %s %s: %s (%d bytes sent); response ended", request.method, request.path,
                        watch.why, sent)
                if transport is not None and not bodyless:
                    reset_transport(transport)
                return response
            if bodyless:  # whole once its head went out: the handler's stream was only being dropped
                log.info("HTTP %s %s: %s (the answer has no body: it was whole)", request.method, request.path, exc)
                return response
            # Finishing the chunked body would make a truncated download look complete; cut the connection.
            return self._cut(request, response, str(exc))
        except ConnectionError as exc:
            # The client left while a write waited for it (or right before): nothing to answer, nobody at fault
            # here; aiohttp logged this as an error with a traceback.
            log.info("HTTP %s %s: the client closed the connection during the streamed response (%d bytes sent): "
                     "%s", request.method, request.path, sent, exc)
            return response
        finally:
            del self._streaming[reader]
            outcome.remove_done_callback(watch.outcome_done)
            lost.pop(protocol, None)
            watch.close()
        return response

    async def _after_close(self, outcome: asyncio.Future[tuple[Any, Any]], function_id: str, watch: _StreamWatch,
                           transport: asyncio.Transport | None, patience: float) -> str | None:
        """Why a streamed body whose writer closed must be cut rather than ended, judged once the function's outcome
        is in: its error (an ``invocation_timeout`` excepted: a stream may outlast the call's time limit), no outcome
        within ``default_timeout``, or :data:`_STALLED` (the client took none of the bytes still unsent for
        ``patience``, ``send_timeout``, meanwhile); ``None``: end it. Returns at once too when the client leaves or
        the module stops (the caller looks at those).

        Why wait: the writer's close and the function's result travel on different connections. Ending the body as
        soon as the close came made a function that closed its writer and then failed a complete 200 whenever the
        close was seen first (40 of 40 tries when its writer waited for the close's acknowledgement)."""
        if not outcome.done():
            loop = asyncio.get_running_loop()
            settled: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not settled.done():
                    settled.set_result(None)

            outcome.add_done_callback(wake)
            stopping = self._stopping
            if stopping is not None:
                stopping.add_done_callback(wake)
            watch.wake = wake
            deadline = loop.time() + self.settings.default_timeout_ms / 1000
            before = unsent(transport)
            stalled = False
            timer: asyncio.TimerHandle

            # a timer, not asyncio.wait's per wait: the usual wait (the result a moment behind the close) pays one
            def look() -> None:
                nonlocal before, stalled, timer
                now = unsent(transport)
                left = deadline - loop.time()
                if (now and now >= before) or left <= 0:
                    stalled = bool(now and now >= before)
                    wake()
                    return
                before = now
                timer = loop.call_later(min(patience, left), look)

            timer = loop.call_later(min(patience, deadline - loop.time()), look)
            try:
                await settled
            finally:
                timer.cancel()
                watch.wake = None
                outcome.remove_done_callback(wake)
                if stopping is not None:
                    stopping.remove_done_callback(wake)
            if stalled:
                return _STALLED
            if not outcome.done():
                return (f"the function did not return within {self.settings.default_timeout_ms} ms "
                        f"(default_timeout) after its writer closed: whether it failed is unknown")
        _, error = _outcome(outcome, function_id)
        if error is None:
            return None
        if isinstance(error, Mapping):
            if error.get("code") == "invocation_timeout":
                return None
            error = error.get("message", "")
        return f"the function failed after its writer closed: {' '.join(str(error).split())[:300]}"

    @staticmethod
    def _cut(request: web.BaseRequest, response: web.StreamResponse, why: str) -> web.StreamResponse:
        """End a streamed response that cannot be completed as stated: the connection is cut, not the body ended."""
        log.warning("HTTP %s %s: %s; aborting the response", request.method, request.path, why)
        if request.transport is not None:
            # a reset: a client reading an HTTP/1.0 body to the connection's end took a plain close for its end, the
            # cut response for a whole one
            reset_transport(request.transport)
        return response

    # -- engine plumbing -------------------------------------------------------------------------------------

    async def _finish(self, reader: ResponseChannel, *channel_ids: str) -> None:
        """After the response: let go of our response end, then drop both per-request channels.

        Production deletes its per-request channels too (docs/protocol.md#channels). Ends the handler never attached
        would
        otherwise wait for the relay's attach timeout.
        """
        await reader.aclose()
        for channel_id in channel_ids:
            self.services.channels.discard(channel_id)

    def _new_channel(self, body: bytearray | None, made: str | None) -> tuple[str, str, str]:
        """One of a request's two channels on a relay other than the engine's own (``ChannelRelay.reserve_pair``
        makes both there): ``(channel_id, our key, the handler's key)``, the request body's (``body``) written in
        whole at once, no task. Past ``channels.max_open`` a 503 (``made``, the first, is dropped)."""
        relay = self.services.channels
        try:
            refs = relay.create(None, owner=None)  # engine::channels::create's default buffer
        except TooManyChannels as exc:
            if made is not None:
                relay.discard(made)
            raise _Refused(503, f"{exc}; retry later", {"Retry-After": "1"}) from None
        writer, reader = refs["writer"], refs["reader"]
        if body is None:
            return writer["channel_id"], writer["access_key"], reader["access_key"]
        relay.fill(writer["channel_id"], writer["access_key"], body, CHUNK_SIZE)
        return writer["channel_id"], writer["access_key"], reader["access_key"]

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: outcomes are handled where awaited, or do not matter any more
