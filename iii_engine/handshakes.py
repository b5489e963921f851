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
* :class:`CountedOut`: keeps websockets' INFO line per closed connection out of the log for the connections a
  listener closed as accepted or for a newer one (each counted in the listener's own rate-limited warning).

Example:
    >>> silent: Silent[object] = Silent()
    >>> len(silent), silent.pick(spoke=lambda conn: None) is None
    (0, True)
"""

from __future__ import annotations

import array
import logging
from collections.abc import Callable
from itertools import islice
from typing import Any, Generic, TypeVar

__all__ = ["LOOK_AT_MOST", "CountedOut", "Silent", "has_unread_bytes", "quiet_logger"]

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


class CountedOut(logging.Filter):
    """Leaves out websockets' per-connection lines ("connection closed") of connections marked ``counted_out``:
    closed as accepted or for a newer one, each is counted in the listener's own warning, a line per interval (a
    flood of connections that said nothing wrote one INFO line each, 10,000 for 10,000). websockets puts the
    connection in each record's ``websocket`` attribute.

    Example:
        >>> record = logging.makeLogRecord({"msg": "connection closed"})
        >>> CountedOut().filter(record)
        True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(getattr(record, "websocket", None), "counted_out", False)


def quiet_logger(name: str) -> logging.Logger:
    """The logger ``name`` for a listener's websockets server, with :class:`CountedOut` on it (once).

    Example:
        >>> quiet_logger("example.websockets") is quiet_logger("example.websockets")
        True
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, CountedOut) for f in logger.filters):
        logger.addFilter(CountedOut())
    return logger

