"""Whether the reader of a pipe, socket or terminal is still taking what is written to it.

A writer waiting for room cannot tell a slow reader from one that stopped: Linux says a full pipe has room only
once a whole page of it is free, so a reader taking one byte at a time looks exactly like one that takes none. The
bytes still queued for the reader (``FIONREAD`` on a pipe, ``TIOCOUTQ`` on a socket or terminal) tell them apart:
they go down with every byte the reader takes. A stall is watched for on a pipe or FIFO only, whose count is exact;
a socket's shrinks only as the peer's kernel acknowledges or frees whole buffers, and a pseudo-terminal's not at all.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import stat
import termios
from typing import Final

from .errors import OutputStalledError
from .files import _ready
from .source import check_timeout

STALL_CHECKS = 4
"""How many times per ``stall_timeout`` the bytes queued for the reader are looked at (at most once a second, and
at least :data:`MIN_CHECK_S` apart)."""
MIN_CHECK_S = 0.005
"""The shortest time between two looks: a ``stall_timeout`` of a microsecond looked without end and held the loop."""


def queued_bytes(fd: int) -> int | None:
    """The bytes written to ``fd`` that its reader has not taken yet: ``FIONREAD`` for a pipe or FIFO,
    ``TIOCOUTQ`` for a socket or terminal; ``None`` where that cannot be told (a regular file, another OS).

    Example:
        >>> read_end, write_end = os.pipe()
        >>> os.write(write_end, b"abc"), queued_bytes(write_end)
        (3, 3)
        >>> os.read(read_end, 2), queued_bytes(write_end)
        (b'ab', 1)
        >>> os.close(read_end); os.close(write_end)
    """
    kind = _kind(fd)
    return None if kind is None else _ask(fd, _REQUESTS[kind])


_REQUESTS: Final = {"pipe": termios.FIONREAD, "socket": getattr(termios, "TIOCOUTQ", None),
                    "terminal": getattr(termios, "TIOCOUTQ", None)}
"""The ``ioctl`` request that tells each kind of fd's queued bytes (``None``: not on this OS)."""


def _kind(fd: int) -> str | None:
    """``"pipe"`` (a pipe or FIFO), ``"socket"`` or ``"terminal"``; ``None`` for anything else, or a closed fd."""
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode):
            return "pipe"
        if stat.S_ISSOCK(mode):
            return "socket"
        if stat.S_ISCHR(mode) and os.isatty(fd):
            return "terminal"
    except OSError:
        pass
    return None


def _ask(fd: int, request: int | None) -> int | None:
    if request is None:
        return None
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, request, count, True)
    except OSError:
        return None
    return count[0]


def stall_watch(fd: int, stall_timeout: float | None, what: str) -> StallWatch | None:
    """The :class:`StallWatch` for writes to ``fd`` (``None`` for no ``stall_timeout``, or for an fd that never
    waits for a reader: a regular file, ``/dev/null``). A pipe or FIFO only: on a socket or a terminal the bytes the
    reader takes cannot be seen one by one (``ValueError``, before anything is written): a socket's queue shrinks
    only as the peer's kernel acknowledges or frees whole buffers, long after a slow reader took bytes, and a
    pseudo-terminal's reports none.

    Example:
        >>> import socket
        >>> left, right = socket.socketpair()
        >>> stall_watch(left.fileno(), 1.0, "the socket")
        Traceback (most recent call last):
        ValueError: stall_timeout needs a pipe or FIFO: the socket is a socket (its reader's progress cannot be seen)
        >>> left.close(); right.close()
    """
    check_timeout(stall_timeout, "stall_timeout")
    if stall_timeout is None:
        return None
    kind = _kind(fd)
    if kind == "pipe":
        return StallWatch(fd, stall_timeout, what)
    if kind is not None:
        raise ValueError(f"stall_timeout needs a pipe or FIFO: {what} is a {kind} (its reader's progress cannot be "
                         "seen)")
    return None  # a regular file or a device that is not a terminal: its writes never wait for a reader


class StallWatch:
    """Fails a wait for room in the pipe ``fd`` once its reader has taken none of the bytes queued for it for
    ``timeout`` seconds of that wait (:func:`queued_bytes` going down is the reader taking bytes, however few).
    Only the waits count: while the channel's writer is quiet, nobody is kept waiting. ``what`` names the output in
    the error (``"fd 5"``, ``"command 'sort'"``). Another writer of the same pipe can hide the reader's progress by
    filling what it takes.

    Example:
        >>> async def demo() -> str:
        ...     read_end, write_end = os.pipe()
        ...     os.set_blocking(write_end, False)
        ...     watch = StallWatch(write_end, 0.2, "the pipe")
        ...     try:
        ...         while True:  # fill it: nobody reads
        ...             try:
        ...                 watch.took(os.write(write_end, bytes(65536)))
        ...             except BlockingIOError:
        ...                 await watch.until_writable()
        ...     except OutputStalledError as exc:
        ...         return str(exc)
        ...     finally:
        ...         os.close(read_end); os.close(write_end)
        >>> asyncio.run(demo())
        'the pipe took none of the 65536 bytes waiting for it for 0.2 s (0 taken before)'
    """

    def __init__(self, fd: int, timeout: float, what: str) -> None:
        check_timeout(timeout, "stall_timeout")
        self.fd = fd
        self.timeout = timeout
        self.what = what
        self.written = 0
        self._step = max(min(timeout / STALL_CHECKS, 1.0), MIN_CHECK_S)

    def took(self, count: int) -> None:
        """A write took ``count`` bytes.

        Example:
            >>> async def demo() -> int:
            ...     read_end, write_end = os.pipe()
            ...     watch = StallWatch(write_end, 1.0, "the pipe")
            ...     watch.took(os.write(write_end, b"abc"))
            ...     os.close(read_end); os.close(write_end)
            ...     return watch.written
            >>> asyncio.run(demo())
            3
        """
        self.written += max(count, 0)

    async def until_writable(self) -> bool:
        """:func:`~iii_channels.files._ready` for writing, raising :class:`OutputStalledError` once the reader took
        nothing for ``timeout`` seconds of this wait.

        Example:
            >>> async def demo() -> bool:
            ...     read_end, write_end = os.pipe()
            ...     try:
            ...         return await StallWatch(write_end, 1.0, "the pipe").until_writable()  # room: at once
            ...     finally:
            ...         os.close(read_end); os.close(write_end)
            >>> asyncio.run(demo())
            True
        """
        loop = asyncio.get_running_loop()
        since = loop.time()
        queued = _in_pipe(self.fd)
        while True:
            try:
                async with asyncio.timeout(self._step):
                    return await _ready(self.fd, writing=True)
            except TimeoutError:
                pass
            queued, since = self._looked(queued, since, self.fd)

    async def until_drained(self, fd: int) -> None:
        """Return once the pipe (``fd``: any end of it) holds nothing more for its reader, raising
        :class:`OutputStalledError` once the reader took none of what it holds for ``timeout`` seconds: what is
        left of a stream after its last write, its end already given (the reader may exit or never read).

        Example:
            >>> async def demo() -> str:
            ...     read_end, write_end = os.pipe()
            ...     try:
            ...         await StallWatch(write_end, 1.0, "the pipe").until_drained(read_end)  # empty: at once
            ...         return "drained"
            ...     finally:
            ...         os.close(read_end); os.close(write_end)
            >>> asyncio.run(demo())
            'drained'
        """
        loop = asyncio.get_running_loop()
        since = loop.time()
        queued = _in_pipe(fd)
        while queued:
            await asyncio.sleep(self._step)
            queued, since = self._looked(queued, since, fd)

    def _looked(self, before: int | None, since: float, fd: int) -> tuple[int | None, float]:
        """The bytes queued now and when the reader was last seen taking some (fewer than ``before``, or nothing
        to tell: no stall is taken for one not seen); :class:`OutputStalledError` once that is ``timeout`` ago."""
        now = asyncio.get_running_loop().time()
        queued = _in_pipe(fd)
        # an empty pipe keeps nobody waiting: a wait for room that timed out in the pass its room came (a timeout of
        # a millisecond) is no stall
        if not queued or before is None or queued < before:
            since = now
        if now - since >= self.timeout:
            taken = max(self.written - (queued or 0), 0)
            raise OutputStalledError(f"{self.what} took none of the {queued} bytes waiting for it for "
                                     f"{self.timeout:g} s ({taken} taken before)", unread=queued, taken=taken)
        return queued, since


def _in_pipe(fd: int) -> int | None:
    """The bytes in the pipe ``fd`` (any end of it), ``None`` when it cannot be told."""
    return _ask(fd, termios.FIONREAD)
