"""How many bytes a TCP connection has sent that its peer has not acknowledged yet (Linux: ``SIOCOUTQ``).

Why: a writer waiting for a slow peer sees its transport's buffer stand still for seconds while the peer reads,
because the kernel takes more from it only once a third of its own send buffer (up to 4 MiB) is free. Progress is
the kernel's queue shrinking; the stream socket and the REST API's streamed responses both judge a stalled peer by
it. Elsewhere it is not known, and callers count their transport's buffer alone.

Example:
    >>> import socket
    >>> a, b = socket.socketpair()
    >>> unacknowledged(a)
    0
    >>> a.close(); b.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys

__all__ = ["unacknowledged", "unsent"]

if sys.platform.startswith("linux"):
    import fcntl

    _OUTQ: int | None = 0x5411  # SIOCOUTQ, which is TIOCOUTQ's number
else:
    _OUTQ = None


def unacknowledged(sock: socket.socket | None) -> int:
    """Bytes in ``sock``'s kernel send queue (sent or not, not yet acknowledged); 0 where that is not known, for
    ``None``, or once the socket closed."""
    if _OUTQ is None or sock is None:
        return 0
    with contextlib.suppress(OSError, ValueError):  # closed meanwhile: its fileno is -1
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0])
    return 0


def unsent(transport: asyncio.WriteTransport | None) -> int:
    """Bytes written to ``transport`` that its peer has not acknowledged yet: its own buffer plus the kernel's send
    queue (:func:`unacknowledged`); 0 for ``None`` (not connected yet, or a stand-in)."""
    if transport is None:
        return 0
    return transport.get_write_buffer_size() + unacknowledged(transport.get_extra_info("socket"))
