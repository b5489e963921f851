"""Whether the reader of a pipe, socket or terminal is still taking what is written to it.

A writer waiting for room cannot tell a slow reader from one that stopped: Linux says a full pipe has room only
once a whole page of it is free, so a reader taking one byte at a time looks exactly like one that takes none. The
bytes still queued for the reader (``FIONREAD`` on a pipe, ``TIOCOUTQ`` on a socket or terminal) tell them apart:
they go down with every byte the reader takes.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import math
import os
import stat
import termios

from .errors import OutputStalledError
from .files import _ready

STALL_CHECKS = 4
"""How many times per ``stall_timeout`` the bytes queued for the reader are looked at (at most once a second)."""


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
    return _ask(fd, _request(fd))


def _request(fd: int) -> int | None:
    """The ``ioctl`` request that tells ``fd``'s queued bytes (see :func:`queued_bytes`), ``None`` for none."""
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode):
            return termios.FIONREAD
        if stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd)):
            return termios.TIOCOUTQ
    except (OSError, AttributeError):  # AttributeError: no such request in this OS's termios
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


def check_stall_timeout(stall_timeout: float | None) -> None:
    """Refuse a ``stall_timeout`` that is not a positive, finite number of seconds or ``None``.

    Example:
        >>> check_stall_timeout(0)
        Traceback (most recent call last):
        ValueError: stall_timeout must be more than 0 seconds (and finite) or None, got 0
    """
    if stall_timeout is None:
        return
    if isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float)):
        raise TypeError(f"stall_timeout must be a number of seconds or None, got {stall_timeout!r}")
    if not 0 < stall_timeout < math.inf:
        raise ValueError(f"stall_timeout must be more than 0 seconds (and finite) or None, got {stall_timeout}")


class StallWatch:
    """Fails a wait for room in ``fd`` once its reader has taken none of the bytes queued for it for ``timeout``
    seconds, counted from the last write that took bytes or the last byte the reader took, whichever came later.
    Where the queued bytes cannot be told (:func:`queued_bytes` is ``None``), only writes count as progress.

    ``what`` names the output in the error (``"fd 5"``, ``"command 'sort'"``).

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
        check_stall_timeout(timeout)
        self.fd = fd
        self.timeout = timeout
        self.what = what
        self.written = 0
        self._request = _request(fd)
        #: the bytes queued for the reader when last looked at (``None``: not known)
        self._queued = _ask(fd, self._request)
        #: when the reader was last seen taking bytes, or a write last took some
        self._since = asyncio.get_running_loop().time()

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
        if count > 0:
            self.written += count
            self._queued = _ask(self.fd, self._request)
            self._since = asyncio.get_running_loop().time()

    def _looked(self, now: float) -> int | None:
        """The bytes queued now; the reader took some since the last look when there are fewer (or when nothing
        tells: time nobody watched is not counted against it)."""
        queued = _ask(self.fd, self._request)
        if queued is None or self._queued is None or queued < self._queued:
            self._since = now
        self._queued = queued
        return queued

    async def until_writable(self) -> bool:
        """:func:`~iii_channels.files._ready` for writing, raising :class:`OutputStalledError` once the reader took
        nothing for ``timeout`` seconds.

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
        step = min(self.timeout / STALL_CHECKS, 1.0)
        # Not counted from the last write alone: a reader may have taken bytes while the channel's writer was quiet.
        if self._queued is None:
            self._since = loop.time()
        else:
            self._looked(loop.time())
        while True:
            try:
                async with asyncio.timeout(min(step, self._since + self.timeout - loop.time())):
                    return await _ready(self.fd, writing=True)
            except TimeoutError:
                pass
            now = loop.time()
            if self._request is None:
                queued = None  # only a write counts: none came within the timeout
            else:
                queued = self._looked(now)
            if now - self._since >= self.timeout:
                waiting = f"the {queued} bytes" if queued is not None else "any of the bytes"
                taken = max(self.written - queued, 0) if queued is not None else self.written
                raise OutputStalledError(f"{self.what} took none of {waiting} waiting for it for {self.timeout:g} s "
                                         f"({taken} taken before)", unread=queued, taken=taken)
