"""Connections that have not sent their whole upgrade request yet, as a listener that counts them holds them.

The stream socket (:mod:`iii_engine.modules.stream.socket`) counts a TCP connection from its accept: one that never
sends its request would otherwise hold a descriptor until websockets' 10 s ``open_timeout``, however many came. When
every place is taken, the connection silent longest gives its place to the newcomer (:meth:`Silent.pick`): a client
sends its request as soon as it is connected, so a connection with nothing sent while a newer one came is the one
to close. (Not the engine's worker port: there a burst of connects from one busy process, all completed by the kernel
before that process writes any request, would look silent and be closed; that port does not count connections.)

* :class:`Silent`: a listener's silent connections, oldest first, and the choice of the one to close. A connection
  whose request websockets has parsed (``request`` set) is never chosen, nor one whose bytes wait unread in the
  kernel (asyncio accepts up to 100 connections in one loop turn, before it reads any of them: the oldest of such a
  batch had its whole request there and was closed as silent);
* :class:`QuietHandshakes` (installed by :func:`quiet_logger`) and :class:`NotUpgraded`: websockets logs a line or
  two per connection (an attack's flood of TLS handshakes wrote 4,137 lines in 20 s). For a connection that never
  became a WebSocket (silent until websockets' handshake timeout, bytes that are not HTTP, HTTP/1.0, an upgrade
  answered 4xx/5xx) those lines are left out and counted, one INFO line per interval per listener naming the latest
  (:class:`NotUpgraded`, which the connection names in its ``not_upgraded`` attribute); for one the listener closed
  itself as accepted or for a newer one (``counted_out``), left out uncounted (its listener's own warning counts it).
  Upgraded connections keep websockets' lines.

Example:
    >>> silent: Silent[object] = Silent()
    >>> len(silent), silent.pick(spoke=lambda conn: None) is None
    (0, True)
"""

from __future__ import annotations

import array
import logging
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, Final, Generic, TypeVar
from urllib.parse import SplitResult, urlsplit

from iii.loss_log import LossLog, latest_tail

__all__ = ["BAD_TARGET", "LOOK_AT_MOST", "NotUpgraded", "QuietHandshakes", "Silent", "has_unread_bytes", "quiet_logger",
           "request_target"]

BAD_TARGET: Final = (400, "Bad Request: the request target is not a valid URL\n")
"""The answer to an upgrade request whose target :func:`request_target` cannot split."""


def request_target(target: str) -> SplitResult | None:
    """An upgrade request's target split into its parts, ``None`` when it is not a valid URL (answer it
    :data:`BAD_TARGET`: ``urlsplit`` raises on ``//[x/``, an unclosed IPv6 bracket, and raising inside websockets'
    ``process_request`` was an ERROR with a traceback and a 500 per connection).

    Example:
        >>> request_target("/ws?x=1").query, request_target("//[x/")
        ('x=1', None)
    """
    try:
        return urlsplit(target)
    except ValueError:
        return None

LOOK_AT_MOST = 64
"""Silent connections :meth:`Silent.pick` looks at, oldest first, for one to close: those passed over have spoken
(or their bytes wait to be read); past these the newcomer is refused instead (a bound on the work per accept)."""

_C = TypeVar("_C")


def has_unread_bytes(connection: Any) -> bool:
    """Whether bytes from the peer wait in the kernel, not read yet (``False`` when that cannot be told).

    Example:
        >>> has_unread_bytes(object())
        False
    """
    transport = getattr(connection, "tcp", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or _FIONREAD is None:
        return False
    waiting = array.array("i", [0])
    try:
        _FIONREAD(sock.fileno(), waiting)
    except (OSError, ValueError):  # closed meanwhile (fileno -1)
        return False
    return waiting[0] > 0


def _fionread() -> Callable[[int, array.array[int]], object] | None:
    """``ioctl(fd, FIONREAD, buffer)``, or ``None`` where there is none (Windows: every connection then counts as
    having nothing unread, as before this check)."""
    try:
        import fcntl
        import termios
    except ImportError:
        return None
    return lambda fd, buffer: fcntl.ioctl(fd, termios.FIONREAD, buffer)


_FIONREAD = _fionread()


class Silent(Generic[_C]):
    """A listener's connections that have not sent their whole upgrade request, oldest first."""

    def __init__(self) -> None:
        self._oldest_first: dict[_C, None] = {}

    def __len__(self) -> int:
        return len(self._oldest_first)

    def add(self, connection: _C) -> None:
        """``connection`` was accepted and has said nothing yet."""
        self._oldest_first[connection] = None

    def discard(self, connection: _C) -> None:
        """``connection`` spoke or went."""
        self._oldest_first.pop(connection, None)

    def pick(self, spoke: Callable[[_C], None]) -> _C | None:
        """The connection to close for a newer one, taken out; ``None`` when none of the
        :data:`LOOK_AT_MOST` oldest may be closed. One whose request websockets has parsed (its handshake not yet at
        ``process_request``, a loop turn later) has spoken: ``spoke(connection)`` is called for it (it must leave
        this set). One whose bytes wait unread is passed over and stays."""
        for connection in list(islice(self._oldest_first, LOOK_AT_MOST)):
            if getattr(connection, "request", None) is not None:
                spoke(connection)
            elif not has_unread_bytes(connection):
                del self._oldest_first[connection]
                return connection
        return None


_NOT_UPGRADED_LINES: Final = frozenset({"connection closed", "connection rejected (%d %s)",
                                        "HTTP response sent (%d %s)"})


class NotUpgraded:
    """A listener's connections closed without becoming a WebSocket, counted: the first logged at once, then one INFO
    line per ``interval`` seconds (``where`` names the listener in it).

    Example:
        >>> import asyncio
        >>> async def demo() -> int:
        ...     counted = NotUpgraded(logging.getLogger("example"), "the example port", 10.0)
        ...     counted.closed("('127.0.0.1', 5000)", None)
        ...     counted.flush()
        ...     return counted.count
        >>> asyncio.run(demo())
        1
    """

    def __init__(self, logger: logging.Logger, where: str, interval: float) -> None:
        self._logger = logger
        self._where = where
        #: connections closed without a WebSocket upgrade whose websockets lines were left out, since start
        self.count = 0
        self._log = LossLog(self._write, interval)

    def closed(self, peer: object, response: Any) -> None:
        """A connection from ``peer`` closed without an upgrade (``response``: websockets' answer to it, if any)."""
        self.count += 1
        answer = "no upgrade request" if response is None else f"answered {response.status_code}"
        self._log.lost("closed", f"{peer} ({answer})")

    def flush(self) -> None:
        """Log the count not logged yet (at the listener's stop)."""
        self._log.flush(None)

    def _write(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        self._logger.info("%d connection(s) to %s closed without a WebSocket upgrade since the last line (no upgrade "
                          "request, not HTTP, or refused), %d in all%s", counts["closed"], self._where, self.count,
                          latest_text)


class QuietHandshakes(logging.Filter):
    """Leaves websockets' per-connection lines out of the log for connections that never became a WebSocket: counted
    in the connection's ``not_upgraded`` (:class:`NotUpgraded`) when it has one, not counted when it is marked
    ``counted_out`` (its listener's own warning counts it). websockets puts the connection, a weak proxy, in each
    record's ``websocket`` attribute.

    Example:
        >>> record = logging.makeLogRecord({"msg": "connection closed", "levelno": logging.INFO})
        >>> QuietHandshakes().filter(record)  # no connection to look at: as websockets wrote it
        True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        conn = getattr(record, "websocket", None)
        if conn is None:
            return True
        try:
            if getattr(conn, "counted_out", False):
                return False
            if (record.levelno != logging.INFO or not isinstance(record.msg, str)
                    or record.msg not in _NOT_UPGRADED_LINES):
                return True
            response = getattr(conn, "response", None)
            if response is not None and response.status_code == 101:
                return True
            # once per connection, after its answer (if any)
            counted = getattr(conn, "not_upgraded", None) if record.msg == "connection closed" else None
            if counted is not None:  # (its rate limit needs the running loop: websockets logs on it)
                counted.closed(getattr(conn, "remote_address", None), response)
        except Exception:  # a filter that raised would break websockets' logging call
            # the connection gone already (a dead weak proxy), or not what this expects: the line as websockets wrote it
            return True
        return False


def quiet_logger(name: str) -> logging.Logger:
    """The logger ``name`` for a listener's websockets server, with :class:`QuietHandshakes` on it (once).

    Example:
        >>> quiet_logger("example.websockets") is quiet_logger("example.websockets")
        True
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, QuietHandshakes) for f in logger.filters):
        logger.addFilter(QuietHandshakes())
    return logger

