"""TCP keepalive on the engine's accepted connections, so that a peer that vanished without a word (its host lost
power, a network partition, a NAT that forgot the flow) is noticed by the kernel and its connection ends.

The engine does not ping its workers (production does not: it only answers their pings), so without this such a
connection stayed open for good as far as the engine knew: its registrations kept (and brought back when the
worker's new connection unregistered the same ids, as an overwritten registration is, E5), calls routed to it
waiting for their timeout. The kernel answers the probes itself, so a worker whose event loop is busy is never taken
for dead.

Example:
    >>> import socket
    >>> with socket.socket() as sock:
    ...     keep_alive(sock)
    ...     sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    True
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Final

log = logging.getLogger(__name__)

IDLE_S: Final = 30
"""Seconds a connection is idle before the first probe."""
INTERVAL_S: Final = 10
"""Seconds between unanswered probes."""
PROBES: Final = 3
"""Unanswered probes after which the kernel ends the connection: an idle peer that vanished is noticed within about a
minute (``IDLE_S + INTERVAL_S * PROBES``). One that vanished with data of the engine's unacknowledged is not probed:
the kernel retransmits instead, for about 15 minutes by default (``tcp_retries2``). ``TCP_USER_TIMEOUT`` would
shorten that, but on Linux it also ends a live peer's connection whose receive window stayed shut that long (a
channel reader holding back, as backpressure lets it; measured: a peer not reading was cut at the timeout), so it is
not set."""


def keep_alive(sock: Any) -> None:
    """Turn TCP keepalive on for ``sock`` (a socket, or asyncio's ``TransportSocket``) with the bounds above, where
    the platform has them; a socket that is not TCP (a unix socket) or refuses is left as it is."""
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", IDLE_S), ("TCP_KEEPINTVL", INTERVAL_S), ("TCP_KEEPCNT", PROBES)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError as exc:  # a connection already reset: it ends anyway
        log.debug("TCP keepalive not set: %s", exc)
