"""Loopback ports for servers a test must start on a port known in advance.

A port found free by binding port 0 and closing the socket may be another test process's (pytest-xdist runs two)
by the time the server binds it. Where the server can bind port 0 itself and say what it bound, give it port 0
(:func:`tests.services.logged_port` for engine processes). Where it cannot (``redis-server``, or a client that
must be told the address before the server exists), hold the port with :func:`reserve_port` until the test ends.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

__all__ = ["reserve_port", "reserved_ports"]


def reserve_port(port: int = 0) -> socket.socket:
    """A loopback socket bound to a port the kernel picked, with ``SO_REUSEADDR``, never listening.

    While it is open Linux gives its port to no other bind to port 0 and to no outgoing connection, a client
    dialling it is refused, and a server that sets ``SO_REUSEADDR`` (``redis-server``, asyncio's and so the
    engine's listeners) can still listen on it. Close it (``with``) once the port is no longer needed. ``port``
    holds that port instead (one a server of the test's own just let go, to start it there again).

    Example:
        >>> with reserve_port() as held:
        ...     held.getsockname()[0]
        '127.0.0.1'
    """
    held = socket.socket()
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", port))
    except BaseException:
        held.close()
        raise
    return held


@contextmanager
def reserved_ports(count: int) -> Iterator[list[int]]:
    """``count`` ports held (:func:`reserve_port`) until the ``with`` block ends.

    Example:
        >>> with reserved_ports(2) as (one, two):
        ...     one != two
        True
    """
    with ExitStack() as stack:
        yield [stack.enter_context(reserve_port()).getsockname()[1] for _ in range(count)]
