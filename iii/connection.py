"""The client's transport: one WebSocket to the engine, kept alive with backoff, with an ordered outbound path.

It knows nothing about the protocol. The client gives it callbacks:

- ``on_open(write)``: the socket is up; ``write`` sends straight to it (replay registrations here). Anything
  sent through :meth:`Connection.send` meanwhile is held back, so replays go first.
- ``on_ready()``: the backlog was flushed and ordinary sends now go to the socket.
- ``on_frame(raw)``: one incoming message (``str`` or ``bytes``), called synchronously in arrival order.
- ``on_lost()``: the socket went away; calls still queued are listed by :meth:`Connection.queued_calls`.
- ``on_state(state)``: one of ``disconnected``, ``connecting``, ``connected``, ``reconnecting``, ``failed``.

While the socket is down, sends are queued, at most ``max_queue`` frames. A queued frame may carry a ``key`` (a
call waiting for its answer); on flush, ``keep(key)`` decides whether it is still worth sending. Nothing leaves the
queue unannounced. When it is full:

- a keyed frame pushes out the oldest keyed one, or is refused itself when none is queued; either way the frame
  that is not sent has its ``on_dropped(key)`` told, so its caller fails at once ("never sent", safe to retry);
- an unkeyed frame handed to :meth:`Connection.send` (a fire-and-forget call, whose sender is told nothing later)
  pushes out the oldest keyed frame if there is one, else waits for room, in order, at most ``queue_wait`` seconds,
  and then raises :class:`~iii.errors.OutboundQueueFullError` (at once when reconnection gave up, ``failed``);
  At most ``max_waiting`` (default ``max_queue``) sends wait at once; one more fails at once with that error, so a
  burst of fire-and-forget calls holds at most that many waiting callers;
- an unkeyed frame from :meth:`Connection.send_soon` (the loop's own frames: registrations, invocation results,
  pongs) is kept in order behind those, past the bound: its senders bound their own number, and losing one would
  leave a function unregistered or a caller waiting out its timeout. Only a frame sent with ``droppable=True``
  (telemetry, pongs) is dropped, counted in :attr:`Connection.dropped` with a rate-limited warning.

The queue is bounded in bytes too: best-effort frames at most ``max_best_effort_bytes``
(:data:`BEST_EFFORT_MAX_BYTES`), past which they are dropped like those past their share; the others at most
``max_queue_bytes`` (:data:`MAX_QUEUE_BYTES`), past which a keyed frame's ``on_dropped(key)`` is told at once
(:attr:`Connection.refused_for_bytes` says why meanwhile) and an unkeyed :meth:`Connection.send` raises
:class:`~iii.errors.ConnectionLostError` instead of waiting for room; the loop's own frames are kept past it. The
bound holds while the socket is up too: a frame the socket cannot take at once (flow control paused: the engine
reads slower than we write, or stopped reading) waits in the queue, counted, for the flusher, the only writer then;
an unkeyed :meth:`Connection.send` waits until it is written (back-pressure). Refused with a socket up, the error
code is :data:`OUTBOUND_QUEUE_FULL` (:attr:`Connection.queue_full_code`), ``connection_lost`` with none.

Best-effort (``droppable``) frames never hold more than half of the queue (:data:`BEST_EFFORT_SHARE`), and at a full
queue the oldest of them is the first to make way for any other frame, before a call is pushed out or a send waits:
a flood of log records behind a slow engine refused the next call ("never sent: the outbound queue was full").

Once reconnection gave up (``max_retries``, state ``failed``) nothing queued can leave until :meth:`Connection.start`
runs again: every queued keyed frame, and each new one, has its ``on_dropped(key)`` told at once, and an unkeyed
:meth:`Connection.send` raises :class:`~iii.errors.ConnectionLostError` instead of being queued (its sender would
take the silence for success).

A frame handed to :meth:`Connection.send` while the socket is up but frames are still queued ahead of it (a backlog
draining, an engine that stopped reading) waits behind them and, if that socket is lost first, goes out on the next
one: the reference SDK's behaviour, kept for ``trigger`` with a void action. :meth:`Connection.send_on_this_connection`
is for a sender that must not have that (a void call whose caller may retry it): its frame waits in the same order,
but leaves only on the socket that was up when it was handed over; if that socket is lost first, the frame is dropped
and its sender told False. It waits unwritten until the socket takes it at once (not in the socket's own buffer,
where a socket dropped for ``send_timeout`` would throw it away after its sender had heard True).

The engine's message size limit: our engine names it in its upgrade response (:data:`MAX_MESSAGE_SIZE_HEADER`,
docs/protocol.md#message-size-extension), read on every connection into :attr:`Connection.max_message_size` (``None``:
no header, no limit known, as with the production engine). Callers check their frames against it before handing them
over (:meth:`Connection.oversize`), and every frame is checked again when it is written, against the limit of the
socket it is written to (a frame built before the socket was replaced, or queued while none was up, may meet a smaller
one): one over it is never written, since the engine would close the connection with 1009 and fail every other call
on it (and a frame sent again on every connect, a registration, would do so for ever). A keyed one's
``on_oversized(key, size, limit)`` is told; an unkeyed one handed to :meth:`Connection.send` or
:meth:`Connection.send_on_this_connection` raises :class:`MessageTooLargeError` (its sender hears nothing later),
unless it is the loop's own (``own``); any other is dropped with a warning. The check costs one ``len()`` comparison
for a frame under a quarter of the limit.

A write whose socket takes no bytes for ``send_timeout`` seconds (default 30) means the engine stopped reading
(frozen, stalled): the socket is dropped and a new one made, as for any lost connection. The bound is on time without
progress, not on the whole wait: an engine that keeps taking bytes, however slowly (a 50 MB frame at 100 KB/s takes
500 s), is alive. Without the bound every send, and websockets' own keep-alive ping (which waits for the same drain
before its pong timeout starts), waited for as long as the engine's TCP stack kept the window shut: for ever, the
connection still "connected".

Example:
    >>> conn = Connection("ws://127.0.0.1:1", on_frame=print)
    >>> conn.state
    'disconnected'
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import random
import re
import socket
import ssl
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from importlib import import_module
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.protocol import State

if TYPE_CHECKING:
    from . import ws_fastpath
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    ws_fastpath = import_module(".ws_fastpath", __package__)
from .errors import ConnectionLostError, OutboundQueueFullError, PicklesByState
from .iii_constants import DEFAULT_RECONNECTION_CONFIG, MAX_QUEUE_SIZE, IIIConnectionState, ReconnectionConfig
from .loss_log import BurstLog, LossLog, counts_said, latest_tail

__all__ = ["MAX_MESSAGE_SIZE_HEADER", "MESSAGE_TOO_BIG", "NOT_AN_ENGINE_TRIES", "OUTBOUND_QUEUE_FULL", "Connection",
           "MessageTooLargeError", "announced_limit", "backoff_delay_ms", "check_url", "not_an_engine", "shown_url"]

log = logging.getLogger(__name__)

DEFAULT_SEND_TIMEOUT_S = 30.0
"""How long a write may wait with its socket taking no bytes before the engine is taken as gone (it stopped
reading)."""

DROP_LOG_INTERVAL_S = 10.0
"""Best-effort frames (telemetry, pongs) dropped at a full queue, and calls pushed out of it or refused: the first is
logged at once, later ones with their count at most this often (a peer flooding pings, or a burst of calls while the
engine is down, must not flood the log: 100k calls made 99,000 warnings)."""

BEST_EFFORT_SHARE = 0.5
"""The share of ``max_queue`` that best-effort frames (telemetry, pongs) may hold; past it they are dropped, so
calls always find room without pushing anything out."""

BEST_EFFORT_MAX_BYTES: Final = 16 * 1024 * 1024
"""The most bytes of best-effort frames (telemetry, pongs) the queue holds, whatever their number; past it they are
dropped, counted and logged. The bound of the telemetry buffer before a client is attached
(``SharedEngineConnection.MAX_QUEUE_BYTES``): 500 telemetry frames of up to 4 MiB each were 2 GiB (spans behind a
stopped engine: 923 MB of worker memory in 35 s)."""

MAX_QUEUE_BYTES: Final = 64 * 1024 * 1024
"""The most bytes of other frames (calls, registrations, results) the queue holds while the engine is unreachable.
A call over it fails at once as never sent (a frame alone in the queue is always taken, so a call that fits the
engine's limit can be made during an outage); the loop's own frames (registrations, results) are kept past it, as
past ``max_queue``. Without it 1,000 calls of 4 MiB, plus 1,000 fire-and-forget ones waiting for room, could hold
8 GiB."""

OUTBOUND_QUEUE_FULL: Final = "outbound_queue_full"
"""The error code of a frame refused, never sent, because the outbound queue was full while a socket to the engine
was up (it reads slower than the client sends, or stopped reading). While none is up the code is
``connection_lost``, as for the calls a lost connection fails."""

Frame = str | bytes

MAX_MESSAGE_SIZE_HEADER: Final = "X-III-Max-Message-Size"
"""Response header of our engine's control-socket upgrade (docs/protocol.md#message-size-extension): the largest
message, in bytes, it accepts from a worker (over it, it closes the connection with 1009). The production engine
sends none."""

MESSAGE_TOO_BIG: Final = 1009
"""The close code of a peer that received a message over its size limit."""

MAX_INCOMING_MESSAGE_SIZE = 1024 * 1024 * 1024
"""The largest message, in bytes, the client reads from the engine when the engine names a smaller limit or none.
Far above what an engine forwards (the production engine reads messages of up to 64 MiB from workers), because the
answers an engine builds itself are not bounded so: a function list of 24 registrations of 3 MiB each is 72 MiB. An
engine that names a larger limit gets that plus :data:`ENVELOPE_SLACK`: what it forwards is a worker's message
wrapped in its own frame. Past it the client closes the connection with 1009 and connects again, its calls in flight
failing with an error that says so. Before, any length was read: a broken or hostile peer sending one endless message
had the client buffer until memory ran out. (Read when a :class:`Connection` is made.)"""

ENVELOPE_SLACK: Final = 1024 * 1024
"""Room above an engine's named limit for the frame it wraps a worker's message in (ids, function id, trace
headers)."""

_DIGITS = re.compile(r"[0-9]{1,15}")
_FUNCTION_ID_KEY = '"function_id":'
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _call_named(frame: Frame, key: str) -> str:
    """A lost call as a warning names it: its function and invocation id, each quoted with its unprintable
    characters escaped (a preview of the frame's first 80 characters ended at the id, the function unseen). The
    SDK writes the function id before the data, so only the first ``"function_id":`` is looked at (a data field of
    that name never names the call); a frame whose function id is not whole in its first 512 characters is
    previewed.

    Example:
        >>> _call_named('{"type":"invokefunction","invocation_id":"7f3a","function_id":"orders::pay","data":1}', "7f3a")
        "'orders::pay' (invocation '7f3a')"
        >>> _call_named("call-0", "k0")
        "'call-0'"
    """
    head = frame[:512] if isinstance(frame, str) else frame[:512].decode("utf-8", "replace")
    at = head.find(_FUNCTION_ID_KEY)
    found = _JSON_STRING.match(head, at + len(_FUNCTION_ID_KEY)) if at >= 0 else None
    if found is None:
        return f"{frame[:80]!r:.80}"
    try:
        function_id = json.loads(found.group(0))
    except ValueError:
        return f"{frame[:80]!r:.80}"
    return f"{function_id[:256]!r} (invocation {key[:64]!r})"

NOT_AN_ENGINE_TRIES: Final = 3
"""Answers in a row that are not HTTP at all (a server that speaks another protocol: it answers the same way every
time) after which a client that never connected gives up. Nothing listening (refused) is retried for as long as
configured, and so is a connection closed before any answer: a TCP forwarder in front of an engine not up yet does
that. So does an HTTP 404 (a reverse proxy's before its route to an engine that is starting is up); any other HTTP
status an engine never gives (see :func:`not_an_engine`) gives up at the first answer."""


class MessageTooLargeError(PicklesByState, ValueError):
    """A frame not written: it is ``size`` bytes, over the ``limit`` its socket's engine named (written, the engine
    would close the connection with 1009)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size:,} bytes, over the engine's limit of {limit:,} bytes "
                         "(max_message_size), was not sent")
        self.size = size
        self.limit = limit


def announced_limit(values: list[str]) -> int | None:
    """The engine's message size limit from the :data:`MAX_MESSAGE_SIZE_HEADER` values of its upgrade response:
    the one plain decimal integer > 0; ``None`` (no limit known) for none, several or a malformed one.

    Example:
        >>> announced_limit(["4194304"]), announced_limit([]), announced_limit(["1e6"]), announced_limit(["0"])
        (4194304, None, None, None)
    """
    if len(values) != 1 or not _DIGITS.fullmatch(values[0].strip()):
        return None
    return int(values[0]) or None


def incoming_limit(floor: int | None, announced: int | None) -> int | None:
    """The largest message the client reads from an engine that named ``announced`` (``None``: none), given its own
    ``floor`` (``None``: any length).

    Example:
        >>> MiB = 1024 * 1024
        >>> [incoming_limit(64 * MiB, named) // MiB for named in (None, 4 * MiB, 96 * MiB)]
        [64, 64, 97]
        >>> incoming_limit(None, 4 * MiB) is None
        True
    """
    if floor is None or announced is None:
        return floor
    return max(floor, announced + ENVELOPE_SLACK)
Write = Callable[[Frame], Awaitable[None]]


STABLE_CONNECTION_S: Final = 1.0
"""A connection that stayed up this long starts the reconnect delays over; one lost sooner lets them keep growing:
an engine that accepted and closed at once had every worker reconnect (and replay its registrations) about once a
second for ever, the delay starting over at each handshake. Short: a connection a proxy's idle timeout cuts every few
seconds, or an engine restarted twice in a row, must not wait longer each time. ``max_retries`` still counts failed
connects only."""

FAILURES_LOGGED_IN_FULL: Final = 3
"""Failed connection attempts of one outage (since the last connection, or the start) warned of each in full; later
ones are summed up in one line every :data:`OUTAGE_SUMMARY_INTERVAL_S`, and a line says when it connects again: a
bridge to an unreachable host, retrying every 2 s for ever, wrote the same warning 1,800 times an hour."""
OUTAGE_SUMMARY_INTERVAL_S = 60.0

_MADE_WAY: Final = "made way"  # kinds of calls lost at a full queue (Connection._log_calls_lost)
_REFUSED: Final = "refused"

_GAVE_UP = "never sent: reconnection to the engine gave up (max_retries); connect_async() starts it again"


def backoff_delay_ms(config: ReconnectionConfig, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before reconnection ``attempt`` (0-based): capped exponential backoff with symmetric jitter.

    Example:
        >>> backoff_delay_ms(ReconnectionConfig(initial_delay_ms=100, jitter_factor=0.0), 3)
        800.0
        >>> backoff_delay_ms(ReconnectionConfig(jitter_factor=0.0), 5000)  # hours into an outage: still the cap
        30000.0
    """
    try:
        grown = config.initial_delay_ms * (config.backoff_multiplier**attempt)
    except OverflowError:
        # After about 1,000 attempts (8.5 h of an engine down, at the default 30 s cap) the power has no float; the
        # exception ended the supervisor and the client never reconnected. Past any float is past any cap.
        grown = math.inf if config.initial_delay_ms > 0 else 0.0
    capped = min(grown, config.max_delay_ms)
    jitter = capped * config.jitter_factor * (2 * rand() - 1)
    return float(max(0.0, capped + jitter))


_MAX_DELAY_MS: Final = 10**12
"""The longest reconnection delay, in milliseconds (about 31 years)."""


def check_reconnection(config: ReconnectionConfig | None) -> ReconnectionConfig:
    """``config`` (the default when ``None``) if its backoff can work, else a ``ValueError`` naming the field: a zero
    or NaN delay, or a multiplier below 1, made a reconnection loop with no pause against an engine that was down,
    and an infinite cap a sleep that never ended.

    Example:
        >>> check_reconnection(ReconnectionConfig(initial_delay_ms=250)).initial_delay_ms
        250
        >>> check_reconnection(ReconnectionConfig(backoff_multiplier=0.5))
        Traceback (most recent call last):
        ...
        ValueError: reconnection_config.backoff_multiplier must be a finite number >= 1, got 0.5
    """
    config = config or DEFAULT_RECONNECTION_CONFIG
    rules: tuple[tuple[str, Callable[[float], bool], str], ...] = (
        ("initial_delay_ms", lambda v: 0 < v <= _MAX_DELAY_MS, "> 0 and <= 10**12"),
        ("max_delay_ms", lambda v: 0 < v <= _MAX_DELAY_MS, "> 0 and <= 10**12"),
        ("backoff_multiplier", lambda v: v >= 1, ">= 1"),
        ("jitter_factor", lambda v: 0 <= v <= 1, "between 0 and 1"),
    )
    for name, ok, wanted in rules:
        value = getattr(config, name)
        try:  # (an int with no float, 10**400, made math.isfinite raise a bare OverflowError naming no field)
            number = math.nan if isinstance(value, bool) or not isinstance(value, int | float) else float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or not ok(number):
            raise ValueError(f"reconnection_config.{name} must be a finite number {wanted}, got {value!r:.100}")
    retries = config.max_retries
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
        raise ValueError(f"reconnection_config.max_retries must be an int >= -1 (-1: for ever), got {retries!r}")
    return config


def check_url(url: object) -> str:
    """``url`` if it can name an engine (``ws``/``wss``, a host, a port in 1-65535 if given), else a
    ``ValueError`` (``TypeError`` for a non-string) naming the part that is wrong.

    Example:
        >>> check_url("ws://localhost:49134")
        'ws://localhost:49134'
        >>> check_url("http://localhost:49134")
        Traceback (most recent call last):
        ...
        ValueError: engine URL 'http://localhost:49134' has scheme 'http'; expected ws:// or wss://
        >>> check_url("http://bot:s3cret@localhost:49134")
        Traceback (most recent call last):
        ...
        ValueError: engine URL 'http://bot:***@localhost:49134' has scheme 'http'; expected ws:// or wss://
    """
    if not isinstance(url, str):
        raise TypeError(f"engine URL must be a str like 'ws://localhost:49134', got {type(url).__name__}")
    if not url.strip():
        raise ValueError(f"engine URL {url!r} is empty; expected e.g. 'ws://localhost:49134'")
    # Every message below quotes the URL, which may hold a password; one without its scheme (bot:s3cret@engine:1)
    # is masked as the ws:// URL it was meant to be.
    shown = shown_url(url) if "://" in url else shown_url(f"ws://{url}")[len("ws://"):]
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"engine URL {shown!r} cannot be parsed: {exc}") from None
    if "://" not in url or parts.scheme.lower() not in ("ws", "wss"):
        scheme = f"scheme {parts.scheme!r}" if "://" in url else "no scheme"
        raise ValueError(f"engine URL {shown!r} has {scheme}; expected ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"engine URL {shown!r} has no host")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(f"engine URL {shown!r} has an invalid port {port_text!r}; expected 1-65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"engine URL {shown!r} has port {port}; expected 1-65535")
    return url


def not_an_engine(exc: BaseException) -> str | None:
    """Why a failed connection attempt shows the server is not an iii engine, or ``None`` when it may be one that is
    not ready (refused, timed out, closed before any answer, a 5xx or 429 from the engine or a proxy in front of it).

    Example:
        >>> from websockets.http11 import Response
        >>> from websockets.datastructures import Headers
        >>> not_an_engine(InvalidStatus(Response(404, "Not Found", Headers())))
        'HTTP 404 on the WebSocket upgrade (an engine answers 101 Switching Protocols)'
        >>> not_an_engine(InvalidStatus(Response(503, "Service Unavailable", Headers()))) is None
        True
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status >= 500 or status == 429:
            return None
        return f"HTTP {status} on the WebSocket upgrade (an engine answers 101 Switching Protocols)"
    if isinstance(exc, InvalidMessage):
        if isinstance(exc.__cause__, EOFError):
            # Closed before any answer: what a TCP forwarder with nothing listening behind it does (docker's
            # published ports, kubectl port-forward, ssh -L) while the engine starts; websockets retries it too.
            # Some bytes and no line end before the close is an answer, not HTTP (a TLS server's alert): it was
            # taken for no answer, retried for 30 s and reported as an engine that cannot be reached.
            sent = ws_fastpath.bytes_before_close(exc.__cause__)
            if not sent:
                return None
            return (f"an answer to the WebSocket upgrade that is not HTTP/1.1 ({sent} byte(s) with no line end, then "
                    "the connection closed: a TLS server, with ws:// where wss:// was meant?)")
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        return f"an answer to the WebSocket upgrade that is not HTTP/1.1 ({exc}{cause})"
    return None


def shown_url(url: str) -> str:
    """``url`` as messages and logs show it: a password in it (``ws://user:password@host``, ``ws://token@host``,
    ``?token=…``, ``#token=…``, ``;token=…``) as ``***``.

    Example:
        >>> shown_url("ws://bot:s3cret@engine:49134")
        'ws://bot:***@engine:49134'
        >>> shown_url("ws://engine:49134/#token=t0k")
        'ws://engine:49134/#token=***'
        >>> shown_url("ws://engine:49134")
        'ws://engine:49134'
    """
    if not any(mark in url for mark in "@?#;"):
        return url
    from ._cli import mask_passwords  # here: it loads argparse, which a plain engine URL never needs

    return mask_passwords(url)


def _failure_hint(url: str, exc: BaseException) -> str:
    """What ``url`` may have wrong, given how an attempt at it failed, or ``""``; each hint is worded for the
    message its failure ends in.

    - A 404 at a URL with a path (ends the "did not answer as an iii engine" message): an engine's worker port answers
      at ``/``, and an engine reached at a wrong path answers 404 too, which alone read as "not an engine".
    - A ``wss://`` URL whose TLS handshake the server cut or refused (ends the retried failure's message): the server
      may not speak TLS; the error said only "ConnectionResetError", 30 s long.

    Example:
        >>> from websockets.http11 import Response
        >>> from websockets.datastructures import Headers
        >>> _failure_hint("ws://h:49134/ws", InvalidStatus(Response(404, "Not Found", Headers())))
        "; an engine's worker port answers at the path /, this URL asks for '/ws'"
        >>> _failure_hint("ws://h:49134", InvalidStatus(Response(404, "Not Found", Headers())))
        ''
        >>> _failure_hint("wss://h:49134", ConnectionResetError())
        ' (a wss:// URL: does the server speak TLS? The engine serves ws:// unless a TLS proxy fronts it)'
        >>> _failure_hint("ws://h:49134", ConnectionResetError())
        ''
    """
    if isinstance(exc, InvalidStatus):
        path = urlsplit(url).path
        if exc.response.status_code == 404 and path not in ("", "/"):
            return f"; an engine's worker port answers at the path /, this URL asks for {path!r}"
    elif url.lower().startswith("wss://") and isinstance(exc, ConnectionResetError | ssl.SSLError):
        return " (a wss:// URL: does the server speak TLS? The engine serves ws:// unless a TLS proxy fronts it)"
    return ""


# Errno texts of asyncio's "Multiple exceptions: [Errno 111] Connect call failed ('::1', …), [Errno 111] …" (a name
# such as localhost with an IPv6 and an IPv4 address, each refused).
_ERRNOS = re.compile(r"\[Errno (\d+)\]")


def _refused_hint(exc: BaseException) -> str:
    """For the last error of a wait that ends in "cannot reach the engine": when nothing listens at the address (a
    refused connection), whether an engine runs there and how to start one; ``""`` otherwise.

    Example:
        >>> _refused_hint(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"))
        ': is an engine running there? iii-engine or python -m iii_engine starts one'
        >>> _refused_hint(TimeoutError())
        ''
    """
    if not isinstance(exc, OSError):
        return ""
    if exc.errno is None:  # asyncio's error for every address of a name refused together carries none of its own
        codes = _ERRNOS.findall(str(exc)) if str(exc).startswith("Multiple exceptions:") else []
        refused = bool(codes) and all(int(code) == errno.ECONNREFUSED for code in codes)
    else:
        refused = exc.errno == errno.ECONNREFUSED
    return ": is an engine running there? iii-engine or python -m iii_engine starts one" if refused else ""


def _describe(exc: BaseException) -> str:
    """What a failed attempt's error says, as people know it.

    Example:
        >>> _describe(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"))
        'Connection refused'
        >>> _describe(socket.gaierror(-2, "Name or service not known"))
        'Name or service not known'
    """
    # asyncio words a refused connection as "Connect call failed (addr)"; the errno text is what people know. A
    # resolver's error has its own (negative) codes, which os.strerror calls "Unknown error -2": its own text then.
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _noop(*_: Any) -> None:
    return None


async def _noop_open(_write: Write) -> None:
    return None


def _cancel_requested() -> bool:
    """Whether the running task was asked to cancel (a function: a task held in a local of the frame that raises
    would be a cycle with the error it ends with)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _expire(admitted: asyncio.Future[None], expired: list[bool]) -> None:
    """A wait for room ran out: end it, unless its frame was let in just now."""
    if not admitted.done():
        expired.append(True)
        admitted.cancel()


class _Waiter:
    """An unkeyed frame waiting for room in the full backlog; hashed and equal by identity."""

    __slots__ = ("admitted", "frame")

    def __init__(self, frame: Frame, admitted: asyncio.Future[None] | None) -> None:
        self.frame = frame
        self.admitted = admitted  # None: a frame of the loop's own, which nobody awaits and nothing times out


def _tell(told: asyncio.Future[bool] | None, written: bool) -> None:
    """A sender waiting in :meth:`Connection._send_in_turn` hears whether its frame was written (unless it stopped
    waiting: cancelled)."""
    if told is not None and not told.done():
        told.set_result(written)


class _Pinned:
    """The key of a queued frame of :meth:`Connection.send_on_this_connection`: it may leave only on ``ws``;
    ``written`` tells its sender whether it did (False: dropped unsent). Its sender's ``cancel`` takes it back."""

    __slots__ = ("written", "ws")

    def __init__(self, ws: ClientConnection, written: asyncio.Future[bool]) -> None:
        self.ws = ws
        self.written = written


class _Outflow:
    """The bytes :meth:`Connection._send_bounded` handed to one socket, counted low (a text frame's characters, no
    headers), to tell whether the engine took any of what the socket holds (:meth:`level`)."""

    __slots__ = ("handed", "transport", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.transport = ws.transport
        self.handed = 0

    def level(self) -> int:
        """Bytes the socket holds less those handed to it: it falls only when the engine takes bytes (a frame handed
        over raises what the socket holds at least as much as ``handed``; a write not counted raises it)."""
        return self.transport.get_write_buffer_size() - self.handed

    def resumed(self) -> bool:
        """Down to the low mark: writing resumed, so no send waits on this socket (one woken may not have run)."""
        return self.transport.get_write_buffer_size() <= self.transport.get_write_buffer_limits()[0]


_LOOKS = 4
"""Looks at a waiting send's socket per ``send_timeout``: a socket is dropped once it took nothing for between 1 and
1 + 1/_LOOKS times ``send_timeout``."""


class _DrainWatch:
    """One send waiting for its socket to drain: every ``limit / _LOOKS`` seconds it looks whether the engine took
    bytes since the last look, and expires ``bound`` (the send's timeout) once it took none for ``limit`` seconds.
    A bound on time without progress, not on the whole wait: a 50 MB frame takes 500 s at 100 KB/s."""

    __slots__ = ("bound", "handle", "level", "limit", "loop", "moved_at", "outflow")

    def __init__(self, outflow: _Outflow, level: int, bound: asyncio.Timeout, limit: float) -> None:
        self.outflow = outflow
        self.level = level
        self.bound = bound
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.moved_at = self.loop.time()
        self.handle = self.loop.call_later(limit / _LOOKS, self._look)

    def _look(self) -> None:
        now = self.loop.time()
        level = self.outflow.level()
        if level < self.level or self.outflow.resumed():
            self.moved_at = now
        self.level = level
        idle = now - self.moved_at
        if idle >= self.limit:
            self.bound.reschedule(now)  # expires: the send is cancelled and its wait ends with TimeoutError
        else:
            self.handle = self.loop.call_later(min(self.limit / _LOOKS, self.limit - idle), self._look)

    def stop(self) -> None:
        """The send's wait ended: no more looks."""
        self.handle.cancel()


class _BestEffort:
    """The key of a queued best-effort frame (``droppable``): the first to make way at a full queue."""

    __slots__ = ()


_BEST_EFFORT: Final = _BestEffort()

# A queued frame's key: a call's invocation id (its caller waits for the answer), a pinned frame's _Pinned,
# _BEST_EFFORT, or None.
_Key = str | _Pinned | _BestEffort | None


def _open(ws: ClientConnection) -> bool:
    # What websockets' send needs to hand a frame to the socket at once (else it raises ConnectionClosed unwritten).
    return ws.state is State.OPEN and not ws.transport.is_closing()


class Connection:
    """One engine WebSocket with reconnection and an ordered send path; lives on one event loop.

    Example:
        >>> # conn = Connection(url, on_frame=handle); await conn.start(); await conn.send('{"type":"ping"}')
    """

    def __init__(
        self,
        url: str,
        *,
        on_frame: Callable[[Frame], None],
        on_open: Callable[[Write], Awaitable[None]] = _noop_open,
        on_ready: Callable[[], None] = _noop,
        on_lost: Callable[[], None] = _noop,
        on_state: Callable[[IIIConnectionState], None] = _noop,
        reconnection: ReconnectionConfig | None = None,
        keep: Callable[[str], bool] = lambda _key: True,
        on_dropped: Callable[[str], None] = _noop,
        on_oversized: Callable[[str, int, int], None] = _noop,
        max_queue: int = MAX_QUEUE_SIZE,
        queue_wait: float = 30.0,
        max_waiting: int | None = None,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        max_best_effort_bytes: int = BEST_EFFORT_MAX_BYTES,
        max_size: int | EllipsisType | None = ...,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        send_timeout: float = DEFAULT_SEND_TIMEOUT_S,
    ) -> None:
        if not 0 < send_timeout < float("inf"):  # (NaN fails this too)
            raise ValueError(f"send_timeout must be a finite number of seconds > 0, got {send_timeout!r}")
        self.url = url
        self._shown_url = shown_url(url)  # for messages: never the password
        self._on_frame = on_frame
        self._on_open = on_open
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_state = on_state
        self._config = reconnection or DEFAULT_RECONNECTION_CONFIG
        self._keep = keep
        self._on_dropped = on_dropped
        self._on_oversized = on_oversized
        #: The engine's message size limit in bytes, from the last upgrade response (``None``: it named none).
        self.max_message_size: int | None = None
        #: Frames of at most this many characters are within :attr:`max_message_size` without counting their bytes
        #: (a character is at most 4 UTF-8 bytes): one ``len()`` comparison per frame on the hot path.
        self.check_above = sys.maxsize
        #: The last socket was closed by the engine with 1009 (a message of ours over its size limit).
        self.closed_too_big = False
        #: The last socket was closed by this client with 1009: the engine sent a message over this many bytes
        #: (``None``: it was not).
        self.refused_too_big: int | None = None
        self._max_queue = max_queue
        self._queue_wait = queue_wait
        self._max_waiting = max_queue if max_waiting is None else max_waiting
        self._max_queue_bytes = max_queue_bytes
        self._max_best_effort_bytes = max_best_effort_bytes
        #: While a call refused for :data:`MAX_QUEUE_BYTES` has its ``on_dropped`` told: why, for its error.
        self.refused_for_bytes: str | None = None
        # (``...``: the module's bound as it is now, so a test can lower it)
        self._max_size = MAX_INCOMING_MESSAGE_SIZE if isinstance(max_size, EllipsisType) else max_size
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._send_timeout = send_timeout
        self._ws: ClientConnection | None = None
        self._ready = False  # True once the backlog is flushed: sends may go straight to the socket
        self._running = False
        # From close() until the next start(): best-effort frames are dropped and counted, not queued (the queue is
        # discarded at the close's end: frames queued while it waited for the socket's close were lost uncounted)
        self._closed = False
        self._attempt = 0
        self._backoff = 0  # the step of the next reconnect delay: _attempt, but not started over by a short connection
        # Connection attempts that failed since the last successful one, and why the last one failed.
        self._failures = 0
        self._last_error: str | None = None
        self._last_lost: str | None = None
        # The outage's logging (_log_failure): when its first attempt failed (wall clock, as shown), its failures
        # warned of in full, when its last warning was logged (monotonic), whether some were only counted.
        self._outage_since = 0.0
        self._outage_lines = 0
        self._outage_logged = 0.0
        self._outage_quiet = False
        #: best-effort frames (telemetry, pongs) dropped because the queue was full
        self.dropped = 0
        self._drops = LossLog(self._log_dropped, DROP_LOG_INTERVAL_S)
        self._calls_lost = LossLog(self._log_calls_lost, DROP_LOG_INTERVAL_S)  # calls pushed out or refused
        self._oversized_lines = BurstLog(10, DROP_LOG_INTERVAL_S, log.warning,
                                         LossLog(self._log_oversized, DROP_LOG_INTERVAL_S))
        self._state: IIIConnectionState = "disconnected"
        # Frames waiting for the socket: (frame, key). Filled while down, and when a sync caller must not await.
        self._backlog: deque[tuple[Frame, _Key]] = deque()
        # Keyed frames in the backlog: a full queue looks for the oldest of them only when there is one (a burst
        # of fire-and-forget frames offline would otherwise scan max_queue frames per send).
        self._keyed = 0
        # Pinned frames in the backlog (send_on_this_connection): a lost socket looks for them only when there are.
        self._pinned = 0
        # Best-effort frames in the backlog, and how many it may hold (at least one, for a queue of one).
        self._best_effort = 0
        self._best_effort_bytes = 0
        self._best_effort_cap = max(1, int(max_queue * BEST_EFFORT_SHARE))
        # Unkeyed frames from send() waiting for room in a full backlog, first come first in: each slot the
        # backlog frees goes to the first of them in the same step, so no later frame overtakes them.
        # An ordered dict, not a deque: a caller that stops waiting leaves it in O(1) wherever it stands (a mass
        # cancel of a deque's newest waiters was quadratic).
        self._waiting: OrderedDict[_Waiter, None] = OrderedDict()
        # Bytes (a text frame's characters) of the frames in _backlog that are not best-effort and in _waiting
        self._held_bytes = 0
        # Unkeyed frames queued by send() while the socket was up, by id(frame): whether each was written, for its
        # sender (_send_in_turn). Empty, the flusher's only cost is one truth test per frame.
        self._awaited: dict[int, asyncio.Future[bool]] = {}
        self._gave_up = False  # reconnection gave up (max_retries): nothing will make room any more
        self._ever_connected = False  # a socket was up once since start(): the URL names an engine
        self._not_engine_in_a_row = 0  # attempts in a row answered by something that is not an engine
        self._not_an_engine: str | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._outflow: _Outflow | None = None  # what the current socket's waiting sends know of its progress

    @property
    def state(self) -> IIIConnectionState:
        """The current connection state."""
        return self._state

    @property
    def is_ready(self) -> bool:
        """True while sends go straight to an open socket."""
        return self._ready

    @property
    def gave_up(self) -> bool:
        """True once reconnection gave up (``max_retries``), until :meth:`start` again: nothing queued leaves."""
        return self._gave_up

    @property
    def not_an_engine(self) -> str | None:
        """Why reconnection gave up on a URL whose server is not an iii engine (``None`` when it did not): a client
        that never connected stops at an HTTP status no engine gives, or after :data:`NOT_AN_ENGINE_TRIES` answers
        in a row that are not HTTP or HTTP 404, instead of retrying for as long as an engine that is down is waited
        for."""
        return self._not_an_engine

    @property
    def failed_attempts(self) -> int:
        """Connection attempts that failed since the last successful one."""
        return self._failures

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed (``None`` before any failure)."""
        return self._last_error

    @property
    def last_lost(self) -> str | None:
        """Why the last connection that was up (WebSocket handshake done) ended, as websockets tells it (``None``
        while none has ended since :meth:`start`): what a wait that saw no connection can say about a server that
        completes the handshake and then closes or sends what is not a WebSocket frame."""
        return self._last_lost

    def oversize(self, frame: Frame) -> int | None:
        """``frame``'s size in bytes when it is over :attr:`max_message_size`, else ``None``.

        Example:
            >>> conn = Connection("ws://127.0.0.1:1", on_frame=print)
            >>> conn._set_limit(8)
            >>> conn.oversize("12345678"), conn.oversize("123456789"), conn.oversize("\u00e9" * 5)
            (None, 9, 10)
        """
        limit = self.max_message_size
        if limit is None or len(frame) <= self.check_above:
            return None
        size = len(frame) if isinstance(frame, bytes) or frame.isascii() else len(frame.encode("utf-8", "replace"))
        return size if size > limit else None

    def _set_limit(self, limit: int | None) -> None:
        self.max_message_size = limit
        self.check_above = sys.maxsize if limit is None else limit // 4

    def queued_keys(self) -> set[str]:
        """Keys of frames queued and not yet written to any socket (:meth:`queued_calls`'s)."""
        return {key for key, _ in self.queued_calls()}

    def queued_calls(self) -> list[tuple[str, Frame]]:
        """``(key, frame)`` of the keyed frames (calls) queued and not yet written to any socket, in order."""
        return [(key, frame) for frame, key in self._backlog if isinstance(key, str)]

    def is_queued(self, key: str) -> bool:
        """Whether the frame of ``key`` is queued and not yet written to any socket (:meth:`queued_keys`, without
        building the set: a call's timeout asks it once per call, N times during an outage of N calls)."""
        return any(queued == key for _, queued in self._backlog)

    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._running:
            return
        self._running = True
        self._closed = False
        self._gave_up = False
        self._attempt = self._backoff = 0
        self._failures = 0
        self._outage_lines = 0
        self._outage_quiet = False
        self._ever_connected = False
        self._not_engine_in_a_row = 0
        self._not_an_engine = None
        self._last_lost = None
        self._set_state("connecting")
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self, close_timeout: float | None = None) -> None:
        """Stop reconnecting and close the socket. Frames still queued for a socket that is up are written first
        (calls waiting for answers excepted: never sent, their callers fail with the shutdown), and the engine's
        answer to the close is waited for, both within ``close_timeout`` seconds (the constructor's when ``None``);
        past it the socket is dropped and what is still queued is discarded, counted and logged."""
        bound = self._close_timeout if close_timeout is None else close_timeout
        deadline = asyncio.get_running_loop().time() + bound
        self._running = False
        self._closed = True
        ws = self._ws
        if ws is not None and self._ready and (self._backlog or self._waiting):
            await self._drain_before_close(ws, deadline)
        self._ready = False
        ws, self._ws = self._ws, None
        for task in (self._supervisor, self._flusher):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._drops.close()  # a burst's count not logged yet is logged now (its timer belongs to this loop)
        self._calls_lost.close()
        self._oversized_lines.losses.close()
        self._drop_pinned()
        self._release_awaited()
        unsent = sum(1 for frame, key in self._backlog if key is None)
        if unsent:  # (queued calls, keyed, fail with the client's shutdown; these frames' senders hear nothing)
            log.warning("Closing with %d frames never sent to %s (fire-and-forget calls and answers among them); "
                        "discarded", unsent, self._shown_url)
        if self._best_effort:  # the promise: dropped telemetry is counted and logged, also at the end
            self.dropped += self._best_effort
            log.warning("Closing with %d best-effort frame(s) (telemetry, pongs) never sent to %s; discarded, "
                        "%d dropped in all", self._best_effort, self._shown_url, self.dropped)
        if ws is not None:
            # An engine that stopped reading (stalled, SIGSTOP) never answers the close, nor takes the close frame
            # once the socket's buffers are full: websockets waited 10 s for each, so shutdown() took up to 20 s.
            try:
                async with asyncio.timeout_at(deadline):
                    await ws.close()
            except TimeoutError:
                log.info("The engine at %s did not answer the close within %g s; connection dropped", self._shown_url,
                         bound)
                ws.transport.abort()
        self._backlog.clear()
        self._keyed = 0
        self._pinned = 0
        self._best_effort = 0
        self._best_effort_bytes = 0
        while self._waiting:  # frames waiting for room are discarded with the queue
            self._admit_waiting()
            self._backlog.clear()
        self._held_bytes = 0
        self._set_state("disconnected")

    async def _drain_before_close(self, ws: ClientConnection, deadline: float) -> None:
        """:meth:`close`'s flush: the queue written to ``ws`` until it is empty, ``ws`` is lost or ``deadline`` (loop
        time) passes. Frames the engine sends meanwhile are not read on (see :meth:`_deliver`): an invocation
        started now would answer on a closed socket. Queued calls are taken out unsent first: their callers hear
        the shutdown, and a call written now would run with nobody left to hear its answer.

        Before, the queue was discarded at once: a handler's answer, a fire-and-forget call or a log record still
        waiting for a slow engine to read was lost at every shutdown (logged as discarded)."""
        self._take_keyed()
        loop = asyncio.get_running_loop()
        while (self._backlog or self._waiting) and self._ws is ws and self._ready and _open(ws):
            left = deadline - loop.time()
            if left <= 0:
                return
            queued = len(self._backlog) + len(self._waiting)
            self._kick()
            flusher = self._flusher
            assert flusher is not None
            await asyncio.wait((flusher,), timeout=left)
            if flusher.done() and len(self._backlog) + len(self._waiting) >= queued:
                # The flush ended without taking a frame (a pinned frame's socket went, the senders let in have not
                # queued theirs yet): a turn of the loop for them, never a spin.
                await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))

    async def send(self, frame: Frame, key: str | None = None, *, batch: bool = False, own: bool = False,
                   wait: float | None = None) -> bool:
        """Send ``frame`` now if possible, else queue it; True when it was written to the socket.

        Order is kept: a frame never overtakes one handed over earlier. ``batch``: more frames are likely to be
        sent in this turn of the loop (many calls in flight), so this one may wait for the end of the turn and go
        out with them in one write. ``own``: a frame of the loop's own (an invocation result, a registration):
        a full queue keeps it past the bound, as :meth:`send_soon` does, instead of making it wait for room and
        fail after ``queue_wait`` (a handler's result was lost so, and its caller waited out its timeout).
        ``wait``: the sender's own bound in seconds (a call's ``timeout_ms``) on a wait for room, when shorter than
        ``queue_wait``.
        """
        ws = self._ws
        paused = False
        # A socket already closed whose loss is not handled yet is down: the frame waits for the next one (sent to
        # it, websockets raised ConnectionClosed without writing, and the frame was lost without a word).
        if self._ready and ws is not None and not self._backlog and _open(ws):
            if len(frame) > self.check_above and self._too_big(frame, key, own):
                return False
            if self._write_now(ws, frame, batch):
                return True
            # Flow control paused (the engine reads slower than we write, or stopped reading): the frame waits in the
            # queue, counted for max_queue_bytes, for the flusher, the one writer then. Written here, each sender
            # put its frame into the socket's buffer before waiting for it to drain, uncounted: 200 concurrent
            # calls of 1 MiB behind a SIGSTOPped engine held 205 MB there, none refused.
            paused = True
        if key is None and self._gave_up and len(self._backlog) < self._max_queue and not self._waiting:
            # Queued, it would wait for a connection nothing will make; its sender, told nothing later, would take
            # the silence for success. (A full queue says so: OutboundQueueFullError below.)
            raise ConnectionLostError("connection_lost", _GAVE_UP)
        if key is None and not own and self._over_bytes(frame):
            raise self._queue_full(self._bytes_full())
        # Its sender waits for the write, as it waited for the socket to drain when it wrote the frame itself; so
        # does one behind such a sender: returning once queued, concurrent senders after the first would queue a
        # burst each and be refused at the byte bound while the engine still reads.
        if key is None and self._ready and (paused or self._awaited):
            return await self._send_in_turn(frame, own, wait)
        await self._queue(frame, key, own, wait)
        return False

    async def _queue(self, frame: Frame, key: str | None, own: bool, wait: float | None) -> None:
        """:meth:`send`'s frame into the queue: kept past a full one if ``own``, else it waits for room (unkeyed)."""
        if not self._enqueue(frame, key):
            if own:
                self._keep_past_bound(frame)
            else:
                await self._wait_for_room(frame, wait)
        if self._ready:
            self._kick()

    async def _send_in_turn(self, frame: Frame, own: bool, wait: float | None) -> bool:
        """:meth:`send` of an unkeyed frame while the socket is up but cannot take it at once: queued behind the
        others for the flusher, and waited for until it is written (True), or its socket is lost or closed first
        (False: it stays queued for the next socket, or was discarded with the queue). The wait is the sender's
        back-pressure: returning once queued, a loop of fire-and-forget calls would fill the queue to its bound and
        be refused while the engine still reads."""
        awaited = self._awaited
        written: asyncio.Future[bool] | None = None
        if id(frame) not in awaited:  # (the same object handed over twice at once: the second is not waited for)
            # Before it is queued: the flusher may take and write it before this coroutine runs again.
            written = awaited[id(frame)] = asyncio.get_running_loop().create_future()
        try:
            await self._queue(frame, None, own, wait)
            return False if written is None else await written
        finally:
            if written is not None and self._awaited.get(id(frame)) is written:
                del self._awaited[id(frame)]

    async def send_on_this_connection(self, frame: Frame) -> bool:
        """Send ``frame`` on the socket that is up now, in order behind the frames handed over before it; True once
        it is written to that socket, False when no socket is up or it is lost before the frame's turn. Never kept
        for a later socket, so False means never sent (safe to retry).

        Raises :class:`~iii.errors.ConnectionLostError` (never sent) when the queue is full (once no best-effort
        frame is left to make way for it). Cancelling the wait
        takes the frame back unless it has already been written. Loop thread only.
        """
        ws = self._ws
        if ws is None or not _open(ws):
            return False
        if len(frame) > self.check_above:  # (pinned to this socket: its limit is the one that counts)
            self._too_big(frame, None, False)
        if self._ready and not self._backlog and self._write_now(ws, frame, False):
            return True
        # Else it waits in the queue, unwritten, until the socket takes it at once (_pinned_turn): written into a
        # socket's full buffer, it would be thrown away with the socket if the engine stopped reading, after its
        # sender had heard True.
        # (Best-effort frames make way for it, as for a call: else it was refused while telemetry held
        # half of the queue.)
        if self._waiting or (len(self._backlog) >= self._max_queue and not self._make_way()):
            # Refused, not waited for: its sender can be told, and room made later could be on another socket.
            raise self._queue_full(f"the outbound queue is full ({self._max_queue} frames waiting for the engine)")
        if self._over_bytes(frame):
            raise self._queue_full(self._bytes_full())
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._backlog.append((frame, _Pinned(ws, written)))
        self._pinned += 1
        self._held_bytes += len(frame)
        if self._ready:
            self._kick()
        return await written

    async def _send_open(self, ws: ClientConnection, frame: Frame) -> None:
        """Write ``frame`` to ``ws``, which is open (:func:`_open`): handed to the socket by the time this returns or
        is cancelled (in the drain that follows the write)."""
        if self._write_now(ws, frame, False):
            return
        try:
            await self._send_bounded(ws, frame)
        except ConnectionClosed:
            pass  # handed to the socket before the loss was seen: in flight, like any frame written then

    async def _send_bounded(self, ws: ClientConnection, frame: Frame) -> None:
        """``ws.send(frame)``, its wait for the socket to drain bounded by ``send_timeout`` seconds without progress:
        while the engine takes bytes, however slowly (a large frame on a slow link), the wait goes on; once it took
        none for ``send_timeout``, the socket is dropped (the engine stopped reading) and ``ConnectionClosed``
        raised; the frame is lost with the socket.

        websockets' send writes first and then waits, so the bound never leaves a frame half written."""
        outflow = self._outflow_of(ws)
        level = outflow.level()  # before this frame is handed over
        outflow.handed += len(frame)
        await self._bounded(ws, ws.send(frame), outflow, level)

    async def _drained(self, ws: ClientConnection) -> bool:
        """Wait until ``ws`` takes writes without waiting (its buffer drained to the low mark), bounded as
        :meth:`_send_bounded` is; False when ``ws`` is lost or dropped meanwhile."""
        outflow = self._outflow_of(ws)
        try:
            await self._bounded(ws, ws_fastpath.drain_or_close(ws), outflow, outflow.level())
        except ConnectionClosed:
            return False
        return _open(ws)

    def _outflow_of(self, ws: ClientConnection) -> _Outflow:
        outflow = self._outflow
        if outflow is None or outflow.ws is not ws:
            outflow = self._outflow = _Outflow(ws)
        return outflow

    async def _bounded(self, ws: ClientConnection, wait: Awaitable[None], outflow: _Outflow, level: int) -> None:
        """Await ``wait`` (a wait for ``ws`` to drain); once ``ws`` took no bytes for ``send_timeout`` (``level``:
        :meth:`_Outflow.level` when the wait began), drop ``ws`` and raise ``ConnectionClosed``."""
        try:
            async with asyncio.timeout(None) as bound:
                watch = _DrainWatch(outflow, level, bound, self._send_timeout)
                try:
                    await wait
                finally:
                    watch.stop()
                return
        except TimeoutError:
            pass
        if not ws.transport.is_closing():  # (the first of the sends that waited says it)
            log.warning("The engine at %s took nothing sent to it for %g s (send_timeout): it stopped reading; "
                        "dropping the connection and reconnecting", self._shown_url, self._send_timeout)
            ws.transport.abort()
        raise ConnectionClosed(None, None)

    async def _pinned_turn(self, ws: ClientConnection, frame: Frame, pinned: _Pinned) -> bool:
        """The queue's head is ``pinned``'s ``frame`` and ``ws`` the socket being flushed: it is written once ``ws``
        takes it at once, or dropped unsent, and taken out of the queue; False (left queued, to be dropped with
        ``ws``) when ``ws`` was lost or dropped while the frame waited for it to drain.

        It waits unwritten at the head of the queue (the frames behind it wait too, in order): written into the
        socket's full buffer instead, it was thrown away with the socket when the engine had stopped reading, and
        its sender had been told True."""
        if not pinned.written.done() and pinned.ws is ws and _open(ws):
            if self._write_now(ws, frame, False):
                self._popleft()
                pinned.written.set_result(True)
                return True
            if ws_fastpath.AVAILABLE:  # (else nothing is written at once: _send_open below sends it)
                if not await self._drained(ws):
                    return False
                if not self._backlog or self._backlog[0][1] is not pinned:  # (taken out meanwhile: lost, closed)
                    return True
        self._popleft()
        await self._send_queued_pinned(ws, frame, pinned)
        return True

    async def _send_queued_pinned(self, ws: ClientConnection, frame: Frame, pinned: _Pinned) -> None:
        """A pinned frame's turn on ``ws``: written if ``ws`` is still its socket and open, else dropped; its sender
        is told which (one that stopped waiting has taken it back)."""
        written = pinned.written
        if written.done():
            return
        if pinned.ws is not ws or not _open(ws):
            written.set_result(False)
            return
        try:
            await self._send_open(ws, frame)
        finally:  # (a flusher cancelled by close() in the drain after the write: written all the same)
            if not written.done():
                written.set_result(True)

    def _drop_pinned(self) -> None:
        """The socket is lost (or closed): every pinned frame still queued is dropped and its sender told False,
        so none is written on the next socket."""
        if not self._pinned:
            return
        pinned = [key for _, key in self._backlog if isinstance(key, _Pinned)]
        kept = [(frame, key) for frame, key in self._backlog if not isinstance(key, _Pinned)]
        self._held_bytes -= sum(len(frame) for frame, key in self._backlog if isinstance(key, _Pinned))
        self._backlog.clear()
        self._backlog.extend(kept)
        self._pinned = 0
        for key in pinned:
            if not key.written.done():
                key.written.set_result(False)
        if self._waiting:  # (room was made)
            self._admit_waiting()

    def send_now(self, frame: Frame, key: str | None = None) -> None:
        """Write ``frame`` at once when nothing waits ahead of it and the socket takes it without waiting, else
        queue it like :meth:`send_soon` (loop thread only; never suspends, so callbacks can send)."""
        ws = self._ws
        # (a socket already closed, its loss not handled yet, drops what it is given: the frame waits for the next)
        if self._ready and ws is not None and not self._backlog and _open(ws):
            if len(frame) > self.check_above and self._refused(frame, key):
                return
            if self._write_now(ws, frame, False):
                return
        self.send_soon(frame, key)

    def write_now(self, frame: Frame) -> bool:
        """Write ``frame`` at once if nothing waits ahead of it and the socket takes it without waiting; False (and
        nothing done) otherwise, and for a frame over the socket's size limit (queued by its sender, the loop's
        flush refuses it). Loop thread, or a thread holding the loop parked (:meth:`LoopBridge.park`)."""
        ws = self._ws
        return (self._ready and ws is not None and not self._backlog and _open(ws)
                and (len(frame) <= self.check_above or self.oversize(frame) is None)
                and self._write_now(ws, frame, False))

    def send_if_room(self, frame: Frame) -> bool:
        """Write ``frame`` at once, or queue it while connected and the queue is under its bounds (frames and bytes,
        nobody waiting for room); False, and nothing done, otherwise. For frames made in answer to the engine's,
        which must not pile up behind a socket the engine does not read (loop thread only)."""
        if self.write_now(frame):
            return True
        if (not self._ready or self._waiting or len(self._backlog) >= self._max_queue
                or self._over_bytes(frame)):
            return False
        self.send_soon(frame)
        return True

    def _write_now(self, ws: ClientConnection, frame: Frame, batch: bool) -> bool:
        # A batch frame waits for the end of this turn in the socket's cork (ws_fastpath), with the frames written
        # after it; any frame goes after those corked before it.
        return ws_fastpath.queue_frame(ws, frame, hold=batch)

    def send_soon(self, frame: Frame, key: str | None = None, *, droppable: bool = False) -> None:
        """Queue ``frame`` behind earlier ones and write it as soon as the socket allows (loop thread only).

        A full queue keeps it anyway, past the bound, unless it is ``droppable`` (then it is dropped, counted, with
        a rate-limited warning; so is one past the best-effort share of the queue).
        """
        if droppable and key is None:
            if not self._enqueue_best_effort(frame):
                self._drop(frame)
        elif not self._enqueue(frame, key):
            self._keep_past_bound(frame)
        if self._ready:
            self._kick()

    def _keep_past_bound(self, frame: Frame) -> None:
        """Queue an unkeyed frame of the loop's own although the queue is full (its senders bound their number)."""
        if self._waiting:
            self._waiting[_Waiter(frame, None)] = None  # in order, behind the sends waiting for room
        else:
            self._backlog.append((frame, None))
        self._held_bytes += len(frame)

    def _drop(self, frame: Frame) -> None:
        """Count a best-effort frame dropped at a full queue; warn now, or at the end of the interval."""
        self.dropped += 1
        self._drops.lost("dropped", f"{frame[:80]!r:.80}")  # (a slice first: repr() of a whole MB frame took 5 ms)

    def _log_dropped(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        why = ("reconnection gave up (max_retries), nothing queued leaves" if self._gave_up else
               f"the outbound queue holds at most {self._max_queue} frames waiting for the engine, at most "
               f"{self._best_effort_cap} of them and {self._max_best_effort_bytes:,} bytes best-effort")
        log.warning("%d best-effort frame(s) (telemetry, pongs) dropped since the last warning, %d in all (%s)%s",
                    counts["dropped"], self.dropped, why, latest_text)

    def _log_calls_lost(self, counts: Mapping[str, int], latest: str | None) -> None:
        """The :class:`LossLog` warning of calls that failed at a full queue, never sent (each caller was told)."""
        said = counts_said(counts, ((_MADE_WAY, "queued call(s) made way for newer frames"),
                                    (_REFUSED, "call(s) refused")))
        log.warning("Outbound queue full (at most %d frames and %s bytes waiting for the engine): %s since the last "
                    "warning, each failed at once as never sent%s", self._max_queue, f"{self._max_queue_bytes:,}",
                    said, latest_tail(latest))

    def _enqueue_best_effort(self, frame: Frame) -> bool:
        """Queue a best-effort frame; False (not queued) when the queue is full or holds its share of them, once
        reconnection gave up (it would wait for a connection nothing will make), or once the connection is closed."""
        if (len(self._backlog) >= self._max_queue or self._waiting or self._best_effort >= self._best_effort_cap
                or self._gave_up or self._closed
                or self._best_effort_bytes + len(frame) > self._max_best_effort_bytes):
            return False
        self._backlog.append((frame, _BEST_EFFORT))
        self._best_effort += 1
        self._best_effort_bytes += len(frame)
        return True

    def _over_bytes(self, frame: Frame) -> bool:
        """Whether queueing ``frame``, not best-effort, would take the other frames queued or waiting for room past
        ``max_queue_bytes`` (a frame alone is always taken: the bound is on what piles up)."""
        held = self._held_bytes
        return held > 0 and held + len(frame) > self._max_queue_bytes

    @property
    def queue_full_code(self) -> str:
        """The error code of a frame refused at a full queue now: :data:`OUTBOUND_QUEUE_FULL` while a socket is up,
        ``connection_lost`` while the engine is unreachable."""
        return "connection_lost" if self._ws is None else OUTBOUND_QUEUE_FULL

    def _queue_full(self, why: str) -> ConnectionLostError:
        """The error an unkeyed frame refused at a full queue raises: never sent, ``why``."""
        return ConnectionLostError(self.queue_full_code, f"never sent: {why}")

    def _release_awaited(self) -> None:
        """The socket is lost or closed: senders waiting for their queued frame's write stop waiting (False); the
        frames stay queued for the next socket, or go with the queue at close()."""
        awaited, self._awaited = self._awaited, {}
        for told in awaited.values():
            _tell(told, False)

    def _bytes_full(self) -> str:
        """Why a frame refused by :meth:`_over_bytes` was (its sender's error says it)."""
        return (f"the outbound queue is full ({self._held_bytes:,} bytes of calls and other frames waiting for the "
                f"engine, at most {self._max_queue_bytes:,})")

    def _make_way(self) -> bool:
        """Drop the oldest queued best-effort frame (counted, as one refused is); False when none is queued."""
        if not self._best_effort:
            return False
        backlog = self._backlog
        for index, (old, old_key) in enumerate(backlog):
            if old_key is _BEST_EFFORT:
                del backlog[index]
                self._best_effort -= 1
                self._best_effort_bytes -= len(old)
                self._drop(old)
                return True
        return False

    def _enqueue(self, frame: Frame, key: str | None) -> bool:
        """Queue ``frame``; False when the queue is full and ``frame``, unkeyed, was not queued."""
        backlog = self._backlog
        if key is not None and self._gave_up:  # nothing will send it: its caller fails now, not at its timeout
            self._on_dropped(key)
            return True
        if key is not None and self._over_bytes(frame):  # (refused, not pushing older calls out: it is the newest)
            self.refused_for_bytes = self._bytes_full()
            try:
                self._calls_lost.lost(_REFUSED, _call_named(frame, key))
                self._on_dropped(key)
            finally:
                self.refused_for_bytes = None
            return True
        # (A full queue with sends waiting for room holds no best-effort frame: each would have made way for them,
        # and none is queued while they wait, so one making way here never lets a frame overtake them. Once
        # reconnection gave up, none makes way: the frame would wait for a connection nothing will make, and its
        # sender, refused below, hears it was never sent.)
        if (len(backlog) < self._max_queue and not self._waiting) or (not self._gave_up and self._make_way()):
            backlog.append((frame, key))
            self._held_bytes += len(frame)
            if key is not None:
                self._keyed += 1
            return True
        # Full. A keyed frame's caller can be told it was never sent; an unkeyed one's cannot, so the oldest keyed
        # frame makes way (a scan, only when there is one to find).
        for index, (old, old_key) in enumerate(backlog if self._keyed else ()):
            if isinstance(old_key, str):
                del backlog[index]
                backlog.append((frame, key))
                self._held_bytes += len(frame) - len(old)
                if key is None:
                    self._keyed -= 1
                self._calls_lost.lost(_MADE_WAY, _call_named(old, old_key))
                self._on_dropped(old_key)
                return True
        if key is not None:
            self._calls_lost.lost(_REFUSED, _call_named(frame, key))
            self._on_dropped(key)
            return True
        return False

    def discard_queued(self, unwanted: Callable[[Frame], bool]) -> int:
        """Take every queued unkeyed frame of the loop's own (:meth:`send_soon`, best-effort ones included) for which
        ``unwanted(frame)`` is true out of the queue, unsent; how many. Loop thread only. Frames of :meth:`send`
        callers waiting for room are never touched (their callers were told nothing yet)."""
        kept: list[tuple[Frame, _Key]] = []
        for frame, key in self._backlog:
            if key is None and unwanted(frame):
                self._held_bytes -= len(frame)
            elif key is _BEST_EFFORT and unwanted(frame):  # (a droppable answer: function_not_found, a pong's kin)
                self._best_effort -= 1
                self._best_effort_bytes -= len(frame)
            else:
                kept.append((frame, key))
        dropped = len(self._backlog) - len(kept)
        if dropped:
            self._backlog.clear()
            self._backlog.extend(kept)
        for entry in [e for e in self._waiting if e.admitted is None and unwanted(e.frame)]:
            del self._waiting[entry]
            self._held_bytes -= len(entry.frame)
            dropped += 1
        if self._waiting:
            self._admit_waiting()
        return dropped

    async def _wait_for_room(self, frame: Frame, wait: float | None = None) -> None:
        """Wait until ``frame`` is let into the full backlog, at most ``queue_wait`` seconds or ``wait`` when shorter
        (the sender's own timeout: a void call with ``timeout_ms=1000`` waited the whole 30 s)."""
        bound = self._queue_wait if wait is None else min(wait, self._queue_wait)
        by_call = bound < self._queue_wait
        if self._gave_up:
            raise OutboundQueueFullError(self._max_queue, None)
        if len(self._waiting) >= self._max_waiting:
            raise OutboundQueueFullError(self._max_queue, None, crowded=self._max_waiting)
        loop = asyncio.get_running_loop()
        admitted: asyncio.Future[None] = loop.create_future()
        entry = _Waiter(frame, admitted)
        self._waiting[entry] = None
        self._held_bytes += len(frame)
        # A timer of our own, not asyncio.timeout(): on 3.11 its __aexit__ frame, in the TimeoutError's traceback,
        # keeps the CancelledError, a cycle per wait that ran out (100,000 refused calls held 500 MB until a full
        # collection).
        expired: list[bool] = []
        timer = loop.call_later(bound, _expire, admitted, expired)
        try:
            await admitted
        except asyncio.CancelledError:
            if not expired or _cancel_requested():
                raise  # the caller's own cancel (also one that came with the timer)
            raise OutboundQueueFullError(self._max_queue, bound, by_call=by_call) from None
        finally:
            timer.cancel()
            # A wait that ends (timed out or cancelled) before its frame got a slot cancels ``admitted`` with it,
            # at once, while this coroutine resumes a turn later: an admission in between has already taken the
            # entry out (and skipped it).
            if admitted.cancelled() and entry in self._waiting:
                del self._waiting[entry]
                self._held_bytes -= len(frame)
            # The error raised through here keeps this frame (its traceback), and the cancelled future kept the
            # CancelledError that the error's context holds: a cycle per wait that ran out.
            del entry, admitted

    def _popleft(self) -> tuple[Frame, _Key]:
        item = self._backlog.popleft()
        key = item[1]
        if isinstance(key, str):
            self._keyed -= 1
        elif key is _BEST_EFFORT:
            self._best_effort -= 1
            self._best_effort_bytes -= len(item[0])
        elif key is not None:
            self._pinned -= 1
        if key is not _BEST_EFFORT:
            self._held_bytes -= len(item[0])
        if self._waiting:
            self._admit_waiting()
        return item

    def _admit_waiting(self) -> None:
        waiting, backlog = self._waiting, self._backlog
        while waiting and len(backlog) < self._max_queue:
            entry, _ = waiting.popitem(last=False)
            admitted = entry.admitted
            if admitted is not None and admitted.done():  # its caller stopped waiting (cancelled, timed out)
                self._held_bytes -= len(entry.frame)
                continue
            backlog.append((entry.frame, None))
            if admitted is not None:
                admitted.set_result(None)

    def _fail_waiting(self) -> None:
        """End every wait for room with an error: reconnection gave up, so no room will ever be made."""
        waiting = self._waiting
        while waiting:
            entry = waiting.popitem(last=False)[0]
            self._held_bytes -= len(entry.frame)
            admitted = entry.admitted
            if admitted is not None and not admitted.done():
                admitted.set_exception(OutboundQueueFullError(self._max_queue, None))

    def _drop_keyed(self) -> None:
        """Reconnection gave up: every queued call fails now (never sent) instead of waiting out its timeout."""
        for key in self._take_keyed():
            self._on_dropped(key)

    def take_queued_calls(self) -> list[str] | None:
        """While no socket is up: take every queued call (a keyed frame) out of the queue, unsent, and return their
        keys; their senders are told nothing (the caller tells them). ``None`` while a socket is up: its flush may
        have written them. Loop thread only, so what it takes is never written, to this socket or a later one.

        Example:
            >>> conn = Connection("ws://127.0.0.1:1", on_frame=print)
            >>> conn.send_soon('{"call":1}', "k1"); conn.send_soon('{"void":1}')
            >>> conn.take_queued_calls(), conn.queued_keys(), len(conn._backlog)
            (['k1'], set(), 1)
        """
        return None if self._ws is not None else self._take_keyed()

    def _take_keyed(self) -> list[str]:
        if not self._keyed:
            return []
        taken = [key for _, key in self._backlog if isinstance(key, str)]
        kept = [(frame, key) for frame, key in self._backlog if not isinstance(key, str)]
        self._held_bytes -= sum(len(frame) for frame, key in self._backlog if isinstance(key, str))
        self._backlog.clear()
        self._backlog.extend(kept)
        self._keyed = 0
        if self._waiting:
            self._admit_waiting()
        return taken

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_backlog())

    async def _flush_backlog(self) -> None:
        ws = self._ws
        while self._backlog and self._ready and ws is not None and ws is self._ws and _open(ws):
            frame, key = self._backlog[0]  # (taken from a closed socket, it was lost unwritten: left queued now)
            if isinstance(key, _Pinned):
                if not await self._pinned_turn(ws, frame, key):
                    return
                continue
            self._popleft()
            if isinstance(key, str) and not self._keep(key):
                continue
            # Its sender's wait, taken now: a loss or close() while this write waits for the socket to drain ends the
            # other waits with False (still queued), and this frame was written.
            told = self._awaited.pop(id(frame), None) if key is None and self._awaited else None
            if len(frame) > self.check_above and self._refused(frame, key):
                _tell(told, False)
                continue
            try:
                await self._send_bounded(ws, frame)
            except ConnectionClosed:
                return
            finally:  # (written also when the socket is lost or close() cancels this in the drain that follows)
                _tell(told, True)

    async def _supervise(self) -> None:
        while self._running:
            try:
                ws = await websockets.connect(
                    self.url,
                    max_size=self._max_size,
                    compression=None,
                    open_timeout=self._open_timeout,
                    close_timeout=self._close_timeout,
                    create_connection=ws_fastpath.direct_client_factory(),
                )
            except (OSError, TimeoutError, InvalidHandshake, ValueError) as exc:
                # A refused handshake is retried like any other failure (docs/protocol.md#sdk-improvements S3), but
                # for an answer no engine gives at a URL that never had one: register_worker then retried it for its
                # whole 30 s wait and said only "cannot reach the engine".
                self._failures += 1
                # one hint serves both messages below: a TLS failure is never not_an_engine, a 404 always is
                hint = _failure_hint(self.url, exc)
                self._last_error = _describe(exc) + hint + _refused_hint(exc)
                why = not_an_engine(exc)
                if why is None:
                    self._not_engine_in_a_row = 0
                    self._log_failure(logging.WARNING, f"{str(exc) or type(exc).__name__}{hint}",
                                      "Connection to %s failed: %s")
                else:
                    self._not_engine_in_a_row += 1
                    self._last_error = why
                    # A 404 may be a reverse proxy's before its route to an engine that is starting is up (Traefik,
                    # an ingress's default backend): given the tries a garbled answer gets.
                    tries = (1 if isinstance(exc, InvalidStatus) and exc.response.status_code != 404
                             else NOT_AN_ENGINE_TRIES)
                    if not self._ever_connected and self._not_engine_in_a_row >= tries:
                        self._not_an_engine = f"{self._shown_url} did not answer as an iii engine: {why}{hint}"
                        log.error("%s; not retrying", self._not_an_engine)
                        self._give_up()
                        return
                    # Before the first connection these tries lead to the one error above: a warning each told the
                    # same failure up to three times. Once connected, each is a failure of its own.
                    self._log_failure(logging.WARNING if self._ever_connected else logging.DEBUG, why,
                                      "Connection to %s failed: the server is not an iii engine, or not one now: %s")
                if not await self._wait_before_retry():
                    return
                continue
            response = ws.response
            self._set_limit(announced_limit(response.headers.get_all(MAX_MESSAGE_SIZE_HEADER) if response else []))
            # (nothing but small frames can have come yet: the engine's answers follow what on_open sends)
            ws_fastpath.set_max_message_size(ws, incoming_limit(self._max_size, self.max_message_size))
            try:
                await self._serve(ws)
            except Exception:
                # A callback's bug (on_open, on_ready, on_lost) must not end the supervisor: the client would stay
                # disconnected for good with nothing retrying. The socket is dropped and a new one made as usual.
                log.exception("Serving the connection to %s failed; dropping it and reconnecting", self._shown_url)
                ws.transport.abort()
            if self._running and not await self._wait_before_retry():
                return

    def _log_failure(self, level: int, why: str, line: str) -> None:
        """A failed attempt (counted in ``_failures`` already): ``line % (url, why)`` for the outage's first
        :data:`FAILURES_LOGGED_IN_FULL` warnings (and any below WARNING), then one summary a minute."""
        now = time.monotonic()
        if self._failures == 1:
            self._outage_since = time.time()
        if level < logging.WARNING:
            log.log(level, line, self._shown_url, why)
            return
        if self._outage_lines < FAILURES_LOGGED_IN_FULL:
            self._outage_lines += 1
            self._outage_logged = now
            log.warning(line, self._shown_url, why)
            return
        self._outage_quiet = True
        if now - self._outage_logged >= OUTAGE_SUMMARY_INTERVAL_S:
            self._outage_logged = now
            log.warning("Connection to %s still failing: %d attempts since %s, latest error: %s", self._shown_url,
                        self._failures, time.strftime("%H:%M:%S", time.localtime(self._outage_since)), why)

    async def _wait_before_retry(self) -> bool:
        config = self._config
        if config.max_retries != -1 and self._attempt >= config.max_retries:
            log.error("Max reconnection retries (%d) reached, giving up on %s", config.max_retries, self._shown_url)
            self._give_up()
            return False
        delay = backoff_delay_ms(config, self._backoff)
        self._set_state("reconnecting")
        log.debug("Reconnecting in %.0f ms (attempt %d)", delay, self._attempt + 1)
        await asyncio.sleep(delay / 1000.0)
        self._attempt += 1
        self._backoff += 1
        return self._running

    def _give_up(self) -> None:
        """No more connection attempts until :meth:`start`: whatever waits for one fails now (state ``failed``)."""
        self._running = False
        self._gave_up = True
        self._fail_waiting()
        self._drop_keyed()
        self._set_state("failed")

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._attempt = 0
        connected_at = asyncio.get_running_loop().time()
        if self._outage_quiet:  # (its warnings stopped a while ago: say it is over, at their level)
            log.warning("Connected to %s again after %d failed attempts since %s", self._shown_url, self._failures,
                        time.strftime("%H:%M:%S", time.localtime(self._outage_since)))
        else:
            log.info("Connected to %s", self._shown_url)
        self._failures = 0
        self._outage_lines = 0
        self._outage_quiet = False
        self._ever_connected = True
        self._not_engine_in_a_row = 0
        self.closed_too_big = False
        # (what last_lost says when the server ends the connection cleanly: the iteration below just stops)
        lost = "the server closed the connection"
        self._set_state("connected")
        try:
            await self._on_open(lambda frame: self._send_replayed(ws, frame))
            while self._backlog and _open(ws):
                frame, key = self._backlog[0]
                if isinstance(key, _Pinned):
                    await self._pinned_turn(ws, frame, key)
                    continue
                self._popleft()
                if (not isinstance(key, str) or self._keep(key)) and (len(frame) <= self.check_above
                                                          or not self._refused(frame, key)):
                    await self._send_bounded(ws, frame)
            if not _open(ws):
                # Lost during the replay or the flush without a write failing: not ready. The frames on_ready
                # sends (the worker's registration) would wait for the next socket, and go out there twice.
                raise ConnectionClosed(None, None)
            self._ready = True
            self._on_ready()
            if isinstance(ws, ws_fastpath.DirectClientConnection):
                ws.deliver = self._deliver  # from now on; whatever came earlier is read below first
            async for raw in ws:
                self._deliver(raw)
        except ConnectionClosed as exc:
            lost = str(exc)
            log.info("Connection to %s closed: %s", self._shown_url, exc)
        finally:
            if isinstance(ws, ws_fastpath.DirectClientConnection):
                ws.deliver = None
            self._ready = False
            self._ws = None
            if asyncio.get_running_loop().time() - connected_at >= STABLE_CONNECTION_S:
                self._backoff = 0
            # Only a 1009 the engine sent first: one we sent (a message of the engine's over our own max_size) is
            # not the engine refusing ours.
            close = ws_fastpath.close_sent_by_peer(ws)
            self.closed_too_big = close is not None and close.code == MESSAGE_TOO_BIG
            self.refused_too_big = None
            if close is None:
                ours = ws_fastpath.close_frames(ws)[1]
                if ours is not None and ours.code == MESSAGE_TOO_BIG:
                    self.refused_too_big = ws.protocol.max_message_size
                    log.warning("Connection to %s closed: the engine sent a message over this client's limit of "
                                "%s bytes (1009); connecting again", self._shown_url,
                                f"{self.refused_too_big:,}" if self.refused_too_big is not None else "?")
            self._drop_pinned()
            self._release_awaited()
            if self._running:
                # (a Close that came during the replay ended it as "no close frame received or sent": say the Close)
                self._last_lost = lost if close is None else f"received {close}"
                self._set_state("disconnected")
                self._on_lost()

    async def _send_replayed(self, ws: ClientConnection, frame: Frame) -> None:
        """``on_open``'s write: ``frame`` to ``ws`` unless it is over ``ws``'s limit (dropped with a warning; sent, it
        would close the connection at every connect). Its sender checks first and says what it drops."""
        if len(frame) <= self.check_above or not self._refused(frame, None):
            await self._send_bounded(ws, frame)

    def _too_big(self, frame: Frame, key: _Key, own: bool) -> bool:
        """:meth:`_refused` for a frame about to be written straight to the socket; an unkeyed one that is not the
        loop's ``own`` raises :class:`MessageTooLargeError` instead (its sender must hear it was not sent)."""
        if key is None and not own:
            size = self.oversize(frame)
            if size is not None:
                raise MessageTooLargeError(size, self.max_message_size or 0)
            return False
        return self._refused(frame, key)

    def _refused(self, frame: Frame, key: _Key) -> bool:
        """A frame about to be written to the current socket (queued while no socket was up, or built before this
        socket replaced the last): True (not to be written) when it is over this socket's limit; its sender hears of
        it, or a warning says it was dropped."""
        size = self.oversize(frame)
        if size is None:
            return False
        limit = self.max_message_size or 0
        if isinstance(key, str):
            self._on_oversized(key, size, limit)
        elif self._oversized_lines.take("oversized", f"a frame of {size} bytes: {frame[:80]!r:.80}"):
            # (one line each up to a burst: an engine announcing a small limit and sending frames whose answers pass
            # it wrote a line per frame)
            log.warning("A frame of %d bytes is over the engine's message size limit (%d bytes) and was dropped "
                        "unsent (sent, it would close the connection with 1009): %.80r", size, limit, frame[:80])
        return True

    def _log_oversized(self, counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("%d more frame(s) over the engine's message size limit dropped unsent since the last warning%s",
                    counts["oversized"], latest_tail(latest))

    def _deliver(self, raw: Frame) -> None:
        if self._closed:  # (close()'s flush: nothing is acted on any more, see _drain_before_close)
            return
        try:
            self._on_frame(raw)
        except Exception:
            log.exception("Handling an incoming frame failed; frame skipped: %.200r", raw)

    def _set_state(self, state: IIIConnectionState) -> None:
        if state != self._state:
            self._state = state
            self._on_state(state)
