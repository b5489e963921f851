"""Pipe adapters: subprocesses, asyncio streams, file descriptors and async iterables to and from channels.

Every ``from_*`` function writes into a channel writer (EOF with trailer on success, abort on failure) and
returns the bytes sent; every ``to_*`` function reads a channel into something and returns the bytes received.

Example (a tar stream of data/ through a channel into another tar; each function's own example runs one too):
    >>> import asyncio, tempfile
    >>> from pathlib import Path
    >>> from iii_engine.testing import local_channel
    >>> async def archive(writer: ChannelWriter, root: str) -> int:  # a tar stream of root/data/ into the channel
    ...     return await from_process(writer, ["tar", "c", "-C", root, "data/"])
    >>> async def demo() -> tuple[bool, str]:
    ...     async with local_channel() as ch:
    ...         with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as dst:
    ...             Path(src, "data").mkdir()
    ...             Path(src, "data", "a.txt").write_text("hello")
    ...             extract = to_process(ch.reader, ["tar", "x", "-C", dst], require_trailer=True)
    ...             sent, fed = await asyncio.gather(archive(ch.writer, src), extract)
    ...             text = Path(dst, "data", "a.txt").read_text()
    ...         return sent == fed, text
    >>> asyncio.run(demo())
    (True, 'hello')
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import signal
import socket
import stat
from collections.abc import AsyncIterable, Coroutine, Sequence
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channels import ChannelReader, ChannelWriter

from ._unblocked import write_all
from .asyncio_internals import process_transport
from .errors import ChannelError, ProcessError
from .files import _abort_writer, _fd_chunks, _ready
from .progress import Progress, check_progress
from .sink import ChannelSink
from .source import ChannelSource, _release_writer, check_timeout
from .stall import StallWatch, queued_bytes, stall_watch
from .thread_writes import ThreadWrites

PIPE_CHUNK = 256 * 1024
STDERR_TAIL = 64 * 1024


async def from_iterable(
    writer: ChannelWriter, chunks: AsyncIterable[bytes], *, progress: Progress = None, trailer: bool = True,
    total: int | None = None, label: str = "",
) -> int:
    """Write every chunk of an async iterable, then EOF. An exception aborts the channel and propagates.

    Example:
        >>> import asyncio, json
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> list[object]:
        ...     async with local_channel() as ch:
        ...         async def rows() -> AsyncIterable[bytes]:
        ...             for n in range(3):
        ...                 yield (json.dumps({"row": n}) + "\\n").encode()
        ...         return await asyncio.gather(from_iterable(ch.writer, rows()),
        ...                                     ChannelSource(ch.reader, require_trailer=True).read_all())
        >>> asyncio.run(demo())
        [33, b'{"row": 0}\\n{"row": 1}\\n{"row": 2}\\n']
    """
    try:
        sink = ChannelSink(writer, trailer=trailer, progress=progress, total=total, label=label)
    except BaseException as exc:  # a bad argument: the reader hears now, not at the attach deadline
        await _abort_writer(writer, f"from_iterable could not start: {exc!r}")
        raise
    async with sink:
        async for chunk in chunks:
            await sink.write(chunk)
    return sink.bytes_written


async def _stream_chunks(stream: asyncio.StreamReader) -> AsyncIterable[bytes]:
    while chunk := await stream.read(PIPE_CHUNK):
        yield chunk


async def from_stream(
    writer: ChannelWriter, stream: asyncio.StreamReader, *, progress: Progress = None, trailer: bool = True,
) -> int:
    """Copy an ``asyncio.StreamReader`` (e.g. a socket) into a channel until its EOF.

    Example:
        >>> import asyncio
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> list[object]:
        ...     async with local_channel() as ch:
        ...         stream = asyncio.StreamReader()  # what asyncio.open_connection returns first
        ...         stream.feed_data(b"GET / HTTP/1.0\\r\\n\\r\\n")
        ...         stream.feed_eof()
        ...         return await asyncio.gather(from_stream(ch.writer, stream), ChannelSource(ch.reader).read_all())
        >>> asyncio.run(demo())
        [18, b'GET / HTTP/1.0\\r\\n\\r\\n']
    """
    return await from_iterable(writer, _stream_chunks(stream), progress=progress, trailer=trailer)


async def to_stream(
    reader: ChannelReader, stream: asyncio.StreamWriter, *, progress: Progress = None,
    require_trailer: bool = False, close: bool = True, close_timeout: float | None = 60.0,
    idle_timeout: float | None = None,
) -> int:
    """Copy a channel into an ``asyncio.StreamWriter``, awaiting ``drain()`` so memory stays bounded. With ``close``
    it returns once every byte went to the stream's socket and the stream is closed: a peer that goes away first
    raises its ``ConnectionError``, and one that takes nothing for ``close_timeout`` seconds a ``TimeoutError``.
    ``idle_timeout``: most seconds to wait for the channel's writer's next message (``None``, the default: no
    limit), then :class:`~iii_channels.errors.ChannelIdleError` and the writer is released, as for any failure.

    Example:
        >>> import asyncio, socket
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, bytes]:
        ...     async with local_channel() as ch:
        ...         async def one(data: bytes) -> AsyncIterable[bytes]:  # any async iterable
        ...             yield data
        ...         ours, theirs = socket.socketpair()  # a connected socket: the stream's peer reads from ``theirs``
        ...         _, stream = await asyncio.open_connection(sock=ours)
        ...         sent, _ = await asyncio.gather(to_stream(ch.reader, stream), from_iterable(ch.writer, one(b"ping")))
        ...         received = theirs.recv(100)
        ...         theirs.close()
        ...         return sent, received
        >>> asyncio.run(demo())
        (4, b'ping')
    """
    try:
        _check_exit_timeout(close_timeout, "close_timeout")
        if close_timeout == 0:  # (every close waits a turn at least: 0 failed every copy, all bytes sent)
            raise ValueError("close_timeout must be more than 0 seconds (or None: as long as it takes), got 0")
        source = ChannelSource(reader, require_trailer=require_trailer, progress=progress, text_limit=0,
                               idle_timeout=idle_timeout)
    except BaseException:  # a bad argument: the writer hears now, not after its backpressure wait
        await asyncio.shield(_release_writer(reader))
        raise
    try:
        async for chunk in source.chunks():
            stream.write(chunk)
            await stream.drain()
    except BaseException:
        # The peer went away (or we were cancelled): tell the writer now, not after its backpressure wait.
        await asyncio.shield(_release_writer(reader))
        raise
    if close:
        await _flushed_and_closed(stream, close_timeout)
    return source.bytes_read


async def _flushed_and_closed(stream: asyncio.StreamWriter, within: float | None) -> None:
    """Close ``stream`` once every byte written went to its socket, within ``within`` seconds. Why: ``drain()``
    returns with up to 64 KiB still buffered, and a peer that went away before taking them failed only the close's
    ``wait_closed()``, whose error was dropped: ``to_stream`` returned success with the last 13-53 KB never sent;
    a peer that reads nothing held it in ``wait_closed()`` for ever. A reset as it closes (a peer that closed with
    our bytes unread) is raised too."""
    transport = stream.transport
    try:
        async with asyncio.timeout(DRAIN_S if within is None else within):
            if transport.get_extra_info("sslcontext") is None:
                # drain() waits now until nothing is left buffered. Not over TLS: its transport pauses writing at
                # a buffer of high or more, so at 0 it never resumed and every TLS copy hung; and what it buffers
                # lies in the TCP transport below, which its size does not count. There the close's own flush is
                # waited for, and its error raised.
                transport.set_write_buffer_limits(high=0)
                await stream.drain()
            stream.close()
            await stream.wait_closed()
    except TimeoutError:
        left = transport.get_write_buffer_size()
        transport.abort()
        raise TimeoutError(f"to_stream: the peer did not take the last {left} byte(s) within {within or 0:g} s "
                           "(close_timeout): the stream was aborted") from None


async def from_fd(
    writer: ChannelWriter, fd: int, *, progress: Progress = None, trailer: bool = True, label: str = "",
) -> int:
    """Copy an OS file descriptor (pipe, file, tty) into a channel until EOF. The fd is not closed.

    Example:
        >>> import asyncio, os
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> list[object]:
        ...     async with local_channel() as ch:
        ...         read_end, write_end = os.pipe()
        ...         os.write(write_end, b"from a pipe")
        ...         os.close(write_end)
        ...         try:
        ...             result = await asyncio.gather(from_fd(ch.writer, read_end), ChannelSource(ch.reader).read_all())
        ...         finally:
        ...             os.close(read_end)
        ...         return result
        >>> asyncio.run(demo())
        [11, b'from a pipe']
    """
    return await from_iterable(writer, _fd_chunks(fd, PIPE_CHUNK), progress=progress, trailer=trailer, label=label)


async def to_fd(
    reader: ChannelReader | ChannelSource, fd: int, *, progress: Progress = None, require_trailer: bool = False,
    total: int | None = None, idle_timeout: float | None = None, stall_timeout: float | None = None,
) -> int:
    """Copy a channel into an OS file descriptor. The fd is not closed. ``idle_timeout``: most seconds to wait for
    the writer's next message (``None``, the default: no limit), then
    :class:`~iii_channels.errors.ChannelIdleError` and the writer is released, as for any failure.
    ``stall_timeout``: most seconds the fd's reader may take none of the bytes waiting for it (``None``, the
    default: no limit) while the copy waits for room, then :class:`~iii_channels.errors.OutputStalledError`, a
    failure like any other. A slow reader is not stalled: every byte it takes counts. For a pipe or FIFO; a socket
    or a terminal is a ``ValueError`` (see :func:`~iii_channels.stall.stall_watch`), a regular file never waits.

    Pass a :class:`ChannelSource` instead of a reader to inspect it afterwards (``verified``, ``sha256``); the
    ``progress`` / ``require_trailer`` / ``total`` arguments then do not apply, and ``idle_timeout`` is the
    source's own (given here too, ``ValueError``: one of them would be ignored).

    Example:
        >>> import asyncio, tempfile
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, bytes, bool]:
        ...     async with local_channel() as ch:
        ...         async def one(data: bytes) -> AsyncIterable[bytes]:  # any async iterable
        ...             yield data
        ...         source = ChannelSource(ch.reader, require_trailer=True)
        ...         with tempfile.TemporaryFile() as out:
        ...             writing = from_iterable(ch.writer, one(b"abc"))
        ...             written, _ = await asyncio.gather(to_fd(source, out.fileno()), writing)
        ...             out.seek(0)
        ...             return written, out.read(), source.verified
        >>> asyncio.run(demo())
        (3, b'abc', True)
    """
    try:
        check_timeout(stall_timeout, "stall_timeout")
        if isinstance(reader, ChannelSource) and idle_timeout is not None:
            raise ValueError("to_fd: idle_timeout is given to the ChannelSource passed in, not here "
                             "(ChannelSource(reader, idle_timeout=...))")
        source = reader if isinstance(reader, ChannelSource) else ChannelSource(
            reader, require_trailer=require_trailer, progress=progress, total=total, text_limit=0,
            idle_timeout=idle_timeout)
    except BaseException:  # a bad argument: the writer hears now, not after its backpressure wait
        await asyncio.shield(_release_writer(reader.reader if isinstance(reader, ChannelSource) else reader))
        raise
    out = _FdOut(fd)
    try:
        stall = stall_watch(out.watched(), stall_timeout, f"fd {fd}")
        async for chunk in source.chunks():
            await _write_fd(out, chunk, stall)
    except BaseException:
        # A full disk, a closed pipe, a cancellation: tell the writer now, not after its backpressure wait.
        await asyncio.shield(_release_writer(source.reader))
        raise
    finally:
        out.close()
    return source.bytes_read


def _write_while_ready(fd: int, view: memoryview, poller: select.poll) -> int:
    """Write ``view`` in slices of ``PIPE_BUF`` bytes while ``fd`` says it has room; the bytes written.

    A pipe with room takes ``PIPE_BUF`` bytes without blocking, more may block; the fd's mode is not ours to
    change (it may be shared: a terminal, a shell's pipe). Only where no non-blocking twin could be had
    (:class:`_FdOut`): a terminal with a byte of room says it is writable too, and blocks such a write."""
    written = 0
    while written < len(view):
        written += os.write(fd, view[written:written + select.PIPE_BUF])
        if written < len(view) and not poller.poll(0):
            break
    return written


FULL_BACKOFF_S = 0.01
"""How long to wait before writing again when the loop said the fd had room and it took nothing (a terminal
with one byte of room refuses a ``\\n`` that becomes ``\\r\\n``): the loop would say so again at once, for as
long as nobody reads the terminal."""

_PTMX: Final = (5, 2)
"""The pseudo-terminal multiplexer's device number: opening it again makes a new terminal, not a twin."""


def _socket_of(fd: int) -> socket.socket:
    """A socket object on a duplicate of the socket ``fd`` (closing it leaves ``fd`` open)."""
    dup = os.dup(fd)
    try:
        return socket.socket(fileno=dup)
    except BaseException:
        os.close(dup)
        raise


def _reopened(fd: int, mode: os.stat_result, access: int = os.O_WRONLY) -> int | None:
    """The pipe or terminal of ``fd`` opened again, non-blocking, for writes (or ``access``), or ``None`` when that
    opens another file (checked, not assumed)."""
    twin = os.open(f"/proc/self/fd/{fd}", access | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        again = os.fstat(twin)
        if (again.st_dev, again.st_ino, again.st_rdev) == (mode.st_dev, mode.st_ino, mode.st_rdev):
            return twin
    except BaseException:
        os.close(twin)
        raise
    os.close(twin)
    return None


class _FdOut:
    """Non-blocking writes to an fd that is not ours to change (:func:`to_fd`): its mode is shared with whoever
    else holds it, so a twin takes the writes. A socket is sent to with ``MSG_DONTWAIT`` (through a duplicate); a
    pipe or terminal is opened again (``/proc/self/fd``) with ``O_NONBLOCK``: the same pipe or terminal, another
    open file, whose mode is ours. Why: the loop says a terminal is writable with one byte of room, and a
    blocking write of more then holds the whole event loop until someone reads the terminal. Without a twin (no
    ``/proc``, another kind of fd), ``fd`` itself is written in ``PIPE_BUF`` slices as before."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._sock: socket.socket | None = None
        self._twin: int | None = None
        self.thread: ThreadWrites | None = None
        try:
            mode = os.fstat(fd)
            if stat.S_ISSOCK(mode.st_mode):
                self._sock = _socket_of(fd)
            elif stat.S_ISCHR(mode.st_mode) and (os.major(mode.st_rdev), os.minor(mode.st_rdev)) == _PTMX:
                self.thread = ThreadWrites(fd)  # no twin to be had, and a write there blocks (see thread_writes)
            elif stat.S_ISFIFO(mode.st_mode) or (stat.S_ISCHR(mode.st_mode) and os.isatty(fd)):
                self._twin = _reopened(fd, mode)
        except OSError:  # no twin to be had (no /proc, no fds left, not ours to open): the fd itself, as before
            pass

    def watched(self) -> int:
        """The fd whose room the loop is asked about (the twin's: a registration of the caller's fd stays)."""
        if self._sock is not None:
            return self._sock.fileno()
        return self._twin if self._twin is not None else self.fd

    def write(self, view: memoryview, poller: select.poll) -> int:
        """Write what the fd takes now of ``view``; the bytes written (``BlockingIOError`` for none)."""
        if self._sock is not None:
            return self._sock.send(view, socket.MSG_DONTWAIT)
        if self._twin is not None:
            return os.write(self._twin, view)
        return _write_while_ready(self.fd, view, poller)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._twin is not None:
            os.close(self._twin)
        if self.thread is not None:
            self.thread.close()


async def _write_fd(out: _FdOut, data: bytes, stall: StallWatch | None = None) -> None:
    """Write all of ``data`` to ``out``. A pipe, tty or socket is written when the loop says it has room, never
    blocking, not in a thread: a write blocked in a thread on a reader that stalled cannot be cancelled, and the
    interpreter waits for an executor's thread at exit (``iii-channel serve --out -`` ignored SIGTERM while its
    stdout was not read); a blocking write on the loop holds every task (see :class:`_FdOut`). A terminal's master,
    which has neither twin nor room the loop can tell, is the exception: a daemon thread of its own, one slice at a
    time (:mod:`iii_channels.thread_writes`). ``stall``: its wait for room fails once the reader takes nothing
    (:class:`~iii_channels.stall.StallWatch`)."""
    view = memoryview(data)
    if out.thread is not None:
        while view:
            view = view[await out.thread.write(view):]
        return
    fd = out.watched()
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        if not await (_ready(fd, writing=True) if stall is None else stall.until_writable()):
            await asyncio.get_running_loop().run_in_executor(None, write_all, out.fd, view)
            return
        try:
            taken = out.write(view, poller)
        except BlockingIOError:  # no room after all (a terminal's last byte, another writer of a shared fd)
            await asyncio.sleep(FULL_BACKOFF_S)
            continue
        view = view[taken:]
        if stall is not None:
            stall.took(taken)


STDERR_GRACE_S = 1.0
"""Once the process has exited, how long its stderr may stay open (a background child of it can hold it) before
the tail read so far is used."""


class _StderrTail:
    """The last :data:`STDERR_TAIL` bytes of a process's stderr, read in a task of its own."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        self._tail = bytearray()
        self._task = asyncio.ensure_future(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(PIPE_CHUNK):
            self._tail += chunk
            del self._tail[:-STDERR_TAIL]

    async def result(self) -> bytes:
        """The tail, once stderr ends or :data:`STDERR_GRACE_S` has passed (the process has exited by then)."""
        await asyncio.wait({self._task}, timeout=STDERR_GRACE_S)
        self._task.cancel()
        return bytes(self._tail)

    def cancel(self) -> None:
        self._task.cancel()


EXIT_POLL_S = 0.05
"""How often the exit status is looked at while ``Process.wait()`` cannot return (see :func:`_exit_status`), where
the exit cannot be awaited through a pidfd (Linux before 5.3)."""
_REPORT_POLL_S = 0.001
"""Once the pidfd says the process has exited: how often to look for asyncio's child watcher to report it."""


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), or ``None`` where there is none or it was already reaped."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


EXIT_REPORT_GRACE_S = 1.0
"""Once the pidfd showed a process exited within its time: how long asyncio's report of it may take after."""
EXIT_FLOOR_S = 0.1
"""The least time an exit is waited for, whatever ``within``: a process closes its files (its stdout's end is read)
early in its exit, and the pidfd shows the exit only at its end, a moment later (with ``exit_timeout=0``, 26 of 400
plain commands were killed as "did not exit within 0 s" between the two)."""


def _exit_wait_s(within: float) -> float:
    """How long an exit is waited for when ``within`` seconds were allowed: at least :data:`EXIT_FLOOR_S`; the wait
    and the message of the kill after it both read it here, so the message names the time actually waited.

    Example:
        >>> _exit_wait_s(0), _exit_wait_s(2.5)
        (0.1, 2.5)
    """
    return max(within, EXIT_FLOOR_S)


def _read_events(fd: int) -> int:
    """The events ``fd`` reports for a read right now, without waiting (``POLLIN``, ``POLLHUP``...; 0: none): a
    pidfd is readable once its process has exited, a pipe with no writer left reports ``POLLHUP``.

    Example:
        >>> import os
        >>> read_end, write_end = os.pipe()
        >>> _read_events(read_end)
        0
        >>> os.close(write_end)
        >>> bool(_read_events(read_end) & select.POLLHUP)
        True
        >>> os.close(read_end)
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return next((mask for _, mask in poller.poll(0)), 0)  # one fd registered: one entry at most


async def _until_exited(proc: asyncio.subprocess.Process, within: float | None) -> None:
    """Return once ``proc.returncode`` is set, or ``within`` seconds have passed (``None``: no limit).

    asyncio's ``Process.wait()`` returns only once the process has exited *and* its pipes are closed, which a
    background child of the process holding one keeps from happening for as long as that child runs; the
    documented ``returncode`` is set at the exit itself, but nothing signals it. A pidfd does (without it, it is
    polled every :data:`EXIT_POLL_S`, about 5 ms of CPU per second measured): after it, the child watcher's report
    follows within a few ms. A process the pidfd shows exited when ``within`` runs out has exited within it: its
    report is waited for (at most :data:`EXIT_REPORT_GRACE_S` more), and the exit itself at least
    :data:`EXIT_FLOOR_S`, so ``within=0`` right after a command closed its stdout by exiting does not take it for
    one still running."""
    loop = asyncio.get_running_loop()
    deadline = None if within is None else loop.time() + _exit_wait_s(within)
    exited: asyncio.Future[None] = loop.create_future()
    pidfd = _open_pidfd(proc.pid)
    reported: float | None = None  # the deadline for the report of an exit the pidfd showed in time

    def on_exit() -> None:
        assert pidfd is not None
        loop.remove_reader(pidfd)  # it stays readable: once is enough
        if not exited.done():
            exited.set_result(None)

    if pidfd is not None:
        loop.add_reader(pidfd, on_exit)
    waiting: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                if reported is not None or pidfd is None or not (exited.done() or _read_events(pidfd)):
                    return
                # exited within the time, its report on its way
                reported = deadline = loop.time() + EXIT_REPORT_GRACE_S
                continue
            if pidfd is not None and not exited.done():
                await asyncio.wait({waiting, exited}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                continue
            step = EXIT_POLL_S if pidfd is None else _REPORT_POLL_S
            await asyncio.wait({waiting}, timeout=step if left is None else min(step, left))
    finally:
        waiting.cancel()
        if pidfd is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)


async def _exit_status(proc: asyncio.subprocess.Process, argv: Sequence[str], exit_timeout: float | None,
                       stderr: _StderrTail, after: str, group: bool) -> int:
    """The exit status, waited for at most ``exit_timeout`` seconds (``None``: as long as it takes); past it the
    process (its group when ``group``) is killed and :class:`ProcessError` names the wait (see
    :func:`_until_exited` for how)."""
    await _until_exited(proc, exit_timeout)
    if proc.returncode is None:
        await _kill(proc, group)
        raise ProcessError(argv, None, await stderr.result(),
                           f"did not exit within {_exit_wait_s(exit_timeout or 0.0):g} s of {after}; killed")
    return proc.returncode


STDOUT_EOF_FLOOR_S = 0.1
"""Once the process has exited, the least time its stdout's end is waited for, whatever ``exit_timeout``, where
the pipe cannot be looked into (see :class:`_StdoutAfterExit`): the exit can be seen a moment before the end
that is already on its way."""


class _StdoutAfterExit:
    """Reads of a process's stdout, ``within`` seconds of waiting for it allowed once the process has exited
    (``None``: no limit): a process it left behind (``sh -c 'daemon & echo hi'``) can hold its stdout open long
    after its exit, and the end of stdout would never come. Only the time spent waiting for stdout counts, not the
    time the caller spends on what it read (a slow channel reader).

    Once the time is spent, the pipe is looked into before it counts as held: with no writer left (``POLLHUP``)
    its end is already on its way (the exit was seen first: with ``exit_timeout=0``, 14 of 40 plain commands
    failed so), and it is read to that end unbounded, as what is left in a pipe nobody writes to is finite. Where
    the pipe cannot be looked into, the wait is at least :data:`STDOUT_EOF_FLOOR_S`."""

    def __init__(self, proc: asyncio.subprocess.Process, within: float | None) -> None:
        assert proc.stdout is not None
        self._proc = proc
        self._stdout = proc.stdout
        self._loop = asyncio.get_running_loop()
        self._left = within
        self.allowed = within  # the wait after the exit allowed, for the error
        self._exited_at: float | None = None
        self._bound: asyncio.Timeout | None = None
        self._watch = asyncio.ensure_future(_until_exited(proc, None))
        self._watch.add_done_callback(self._on_exit)

    def _on_exit(self, watch: asyncio.Future[None]) -> None:
        if watch.cancelled() or watch.exception() is not None:
            return
        self._exited_at = self._loop.time()
        if self._left is not None and _stdout_writer_left(self._proc) is None:
            self._left = self.allowed = max(self._left, STDOUT_EOF_FLOOR_S)
        if self._bound is not None and self._left is not None:
            self._bound.reschedule(self._exited_at + self._left)

    async def read(self) -> bytes:
        """The next chunk (``b""`` at its end); ``TimeoutError`` once the wait after the exit ran out and a
        process still holds the pipe."""
        while True:
            started = self._loop.time()
            limit = None if self._exited_at is None or self._left is None else started + self._left
            try:
                async with asyncio.timeout_at(limit) as self._bound:
                    return await self._stdout.read(PIPE_CHUNK)
            except TimeoutError:
                if _stdout_writer_left(self._proc) is not False:
                    raise
                self._left = None  # nobody writes to it any more: its end is on its way
            finally:
                self._bound = None
                if self._exited_at is not None and self._left is not None:
                    self._left -= self._loop.time() - max(started, self._exited_at)

    def close(self) -> None:
        self._watch.cancel()


def _stdout_writer_left(proc: asyncio.subprocess.Process) -> bool | None:
    """Whether a process still holds the write end of ``proc``'s stdout pipe (``None``: cannot be told here).

    Looked at through asyncio's subprocess transport (:func:`~iii_channels.asyncio_internals.process_transport`,
    as :func:`_close_pipes`), its pipe transport's public ``"pipe"``; a transport that has read the end already
    (closing) has no writer left."""
    transport = process_transport(proc)
    if transport is None:
        return None
    pipe = transport.get_pipe_transport(1)
    if pipe is None:
        return None
    if pipe.is_closing():
        return False  # its end was read (the file is closed only later, so its fd number is still ours)
    try:
        events = _read_events(pipe.get_extra_info("pipe").fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return not events & select.POLLHUP


def _check_exit_timeout(exit_timeout: float | None, name: str = "exit_timeout") -> None:
    """Refuse an ``exit_timeout`` (or the timeout ``name``) that is not ``None`` or a finite number of seconds, 0 or
    more.

    Example:
        >>> _check_exit_timeout(0), _check_exit_timeout(None)
        (None, None)
        >>> _check_exit_timeout(float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: exit_timeout must be 0 or more seconds (and finite) or None, got nan
    """
    if exit_timeout is None:
        return
    if isinstance(exit_timeout, bool) or not isinstance(exit_timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {exit_timeout!r}")
    if not 0 <= exit_timeout < math.inf:
        raise ValueError(f"{name} must be 0 or more seconds (and finite) or None, got {exit_timeout!r}")


def _kill_left_behind(proc: asyncio.subprocess.Process, group: bool) -> str:
    """Kill what is left of the exited ``proc``'s process group (when it leads one of its own: ``group``); says
    what was done, for the error: a process that holds its stdout from outside the group is not reached."""
    if not group:
        return ("it has no process group of its own (start_new_session=False or a process_group given), so none was "
                "killed: the process holding its stdout was left running")
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return ("no process of its group was left to kill: the process holding its stdout is outside it (setsid?) "
                "and was left running")
    except PermissionError:
        return "its process group could not be killed (PermissionError): the process holding its stdout runs on"
    return "the rest of its process group was killed"


def _check_argv(argv: Sequence[str]) -> None:
    """Refuse a command line given as one string (each character would be an argument) or an empty one.

    Example:
        >>> _check_argv("ls -l")
        Traceback (most recent call last):
        ...
        TypeError: argv must be a sequence of arguments, not one string: 'ls -l' (use ["sh", "-c", ...] for a shell)
    """
    if isinstance(argv, str | bytes):
        raise TypeError(f"argv must be a sequence of arguments, not one string: {argv!r} "
                        '(use ["sh", "-c", ...] for a shell)')
    if not argv:
        raise ValueError("argv must name a command, got an empty sequence")


def _check_popen(popen: dict[str, Any], own: tuple[str, ...], adapter: str) -> None:
    """``TypeError`` naming the keywords of ``popen`` the adapter sets itself (its pipes): passed on, they failed
    inside asyncio with "got multiple values for keyword argument 'stderr'".

    Example:
        >>> _check_popen({"stderr": None}, ("stdout", "stderr"), "from_process")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: from_process sets the command's stderr itself (...), so stderr= cannot be given
    """
    taken = [name for name in own if name in popen]
    if taken:
        uses = {"stdin": "the channel's data", "stdout": "the channel's data",
                "stderr": "the tail kept for ProcessError"}
        raise TypeError(f"{adapter} sets the command's {' and '.join(taken)} itself ("
                        f"{', '.join(f'{name}: {uses[name]}' for name in own)}), so "
                        f"{' and '.join(f'{name}=' for name in taken)} cannot be given")


def _own_group(popen: dict[str, Any]) -> bool:
    """Start the command as the leader of a new session (so of a process group of its own) unless the caller
    chose (``start_new_session`` / ``process_group`` in ``popen``, which is then left alone); ``True`` when the
    command leads its own group, which is then ours to kill.

    Why a session, not just a group: a command in a background group of our terminal stops (SIGTTIN) when it
    reads the terminal; one without a controlling terminal reads an inherited tty fd like any other.

    Example:
        >>> _own_group({}), _own_group({"start_new_session": False}), _own_group({"process_group": 0})
        (True, False, True)
    """
    if "process_group" in popen:
        return popen["process_group"] == 0 and not popen.get("start_new_session")
    return bool(popen.setdefault("start_new_session", True))


def _send_kill(proc: asyncio.subprocess.Process, group: bool = False) -> None:
    """Send SIGKILL to the process -- with ``group``, to every process of its group, which it leads: the rest of a
    pipeline or a ``cmd &`` of a shell would live on otherwise -- without waiting for anything. Once this returns
    no process it reached runs another instruction of its own (a pending SIGKILL is acted on before any return to
    user code), so nothing done after it, such as closing its stdin, can be seen by them.

    The group is killed even once the leader has exited: what it left behind goes too. A group's id is not reused
    while any process of it lives; an empty one is ignored (its id could only have gone to a new group if the pids
    wrapped around in the moment since the leader's exit). The leader reached by the group kill is not signalled
    again through ``proc.kill()``: that polls it first (``waitpid``), and reaping it there, before asyncio's child
    watcher, made the watcher log ``Unknown child process pid N, will report returncode 255`` and report 255, not
    -9 (seen on a cancelled ``to_process``).

    Example:
        >>> import asyncio
        >>> async def demo() -> int | None:
        ...     proc = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
        ...     _send_kill(proc, group=True)
        ...     await _until_exited(proc, 10)
        ...     return proc.returncode
        >>> asyncio.run(demo())
        -9
    """
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing of the group left, or none of it ours to signal: the leader alone, below
        else:
            with contextlib.suppress(ProcessLookupError):  # reaped already: nothing left to signal
                if os.getpgid(proc.pid) == proc.pid:
                    return  # the leader was in its group, so it got the signal
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _kill(proc: asyncio.subprocess.Process, group: bool = False) -> None:
    """Kill the process (with ``group``, its whole group: see :func:`_send_kill`) and wait for its exit, not for
    its pipes (see :func:`_until_exited`)."""
    _send_kill(proc, group)
    await _until_exited(proc, None)


def _close_pipes(proc: asyncio.subprocess.Process) -> None:
    """Close our ends of the process's pipes once it has exited (or was killed) and we are done with it.

    A child it left behind outside its group (a ``setsid`` daemon, or any child when the caller kept the
    command in our group) can hold them: once asyncio's buffer is full it would block for ever writing into a
    pipe nobody reads, and we would hold the pipes for as long as it lived. With our ends closed it gets EPIPE
    (SIGPIPE), as under a shell whose reader went away.

    asyncio's ``Process`` has no public close; its private transport's ``close`` is the one that does this
    (:func:`~iii_channels.asyncio_internals.process_transport`). Where that cannot be had, the public part is done
    (stdin closed) and the read ends are read to their end and dropped for up to :data:`DRAIN_S` (:func:`_drain`),
    so they close when the last process holding them exits within that time."""
    transport = process_transport(proc)
    if transport is not None:
        transport.close()
        return
    if proc.stdin is not None:
        proc.stdin.close()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None and not stream.at_eof():
            task = asyncio.ensure_future(_drain(stream))
            _DRAINING.add(task)
            task.add_done_callback(_DRAINING.discard)


_DRAINING: set[asyncio.Future[None]] = set()
"""The :func:`_drain` tasks running (the loop keeps only weak references to tasks)."""

DRAIN_S = 2.0
"""How long :func:`_drain` reads a finished process's pipe for its end."""


async def _drain(stream: asyncio.StreamReader, within: float | None = None) -> None:
    """Read ``stream`` to its end, or for ``within`` seconds (default :data:`DRAIN_S`), and drop what comes.

    A reader nobody reads pauses its pipe once asyncio's buffer holds two of its limits, and a paused pipe never
    sees its end: our fd of it stayed open after every process holding the other end had gone (until the garbage
    collector came by). Reading on keeps at most one chunk in memory; the deadline bounds what a process left
    behind outside the group that keeps writing costs (read on without one, a ``yes >&2`` daemon took 0.9 core for
    as long as it ran; past it the pipe pauses again and the daemon blocks, as before).

    Example:
        >>> async def demo() -> bool:
        ...     stream = asyncio.StreamReader()
        ...     stream.feed_data(b"x" * 10)
        ...     stream.feed_eof()
        ...     await _drain(stream)
        ...     return stream.at_eof()
        >>> asyncio.run(demo())
        True
    """
    await asyncio.sleep(0)  # a reader cancelled just before lets go of the stream on its next step
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_S if within is None else within):
            while await stream.read(PIPE_CHUNK):
                pass


async def from_process(
    writer: ChannelWriter, argv: Sequence[str], *, progress: Progress = None, trailer: bool = True,
    exit_timeout: float | None = 60.0, **popen: Any,
) -> int:
    """Run ``argv`` and stream its stdout into the channel. A non-zero exit aborts the channel and raises
    :class:`ProcessError` carrying the exit status and the tail of stderr; so does a process that has not exited
    ``exit_timeout`` seconds after closing its stdout (it is killed; ``None`` waits as long as it takes), and one
    whose stdout stays open ``exit_timeout`` seconds of waiting after its exit (a process it left behind holds it:
    its group is killed).

    The command runs in a session and process group of its own; when this fails or is cancelled the whole group
    is killed (``sh -c 'a | b'`` leaves no ``a`` behind). ``start_new_session=False`` (or a ``process_group``)
    in ``popen`` keeps it where the caller says, and then only the command itself is killed.

    Example:
        >>> import asyncio
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, bytes]:
        ...     async with local_channel() as ch:
        ...         command = ["sh", "-c", "printf hello | tr a-z A-Z"]  # e.g. ["tar", "c", "data/"]
        ...         sent, got = await asyncio.gather(from_process(ch.writer, command, exit_timeout=10),
        ...                                          ChannelSource(ch.reader, require_trailer=True).read_all())
        ...         return sent, got
        >>> asyncio.run(demo())
        (5, b'HELLO')
    """
    try:
        _check_argv(argv)
        _check_exit_timeout(exit_timeout)
        check_progress(progress)
        _check_popen(popen, ("stdout", "stderr"), "from_process")
    except BaseException as exc:
        # Refused before starting, like a command that cannot start: the reader hears now.
        await _abort_writer(writer, f"from_process refused its arguments: {exc}")
        raise
    group = _own_group(popen)
    sink = ChannelSink(writer, trailer=trailer, progress=progress, label=argv[0])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **popen)
    except BaseException as exc:
        # Not started (no such command, a bad popen argument): the reader hears now, not at the attach deadline.
        # The command's base name first: a WebSocket close reason is cut at 123 bytes.
        await sink._abort_quietly(
            f"from_process could not start {os.path.basename(argv[0])!r}: {type(exc).__name__}: {exc}")
        raise
    assert proc.stdout is not None
    stderr = _StderrTail(proc.stderr)
    stdout = _StdoutAfterExit(proc, exit_timeout)
    try:
        try:
            while True:
                try:
                    chunk = await stdout.read()
                except TimeoutError:
                    done = _kill_left_behind(proc, group)
                    raise ProcessError(argv, proc.returncode, await stderr.result(),
                                       f"exited (status {proc.returncode}) but its stdout stayed open "
                                       f"{stdout.allowed:g} s after (held by a process it left behind?); {done}"
                                       ) from None
                if not chunk:
                    break
                await sink.write(chunk)
            returncode = await _exit_status(proc, argv, exit_timeout, stderr, "closing its stdout", group)
            if returncode != 0:
                raise ProcessError(argv, returncode, await stderr.result())
            await sink.close()
        except BaseException:
            await _kill(proc, group)
            raise
        finally:
            stdout.close()
            stderr.cancel()
            _close_pipes(proc)
    except BaseException as exc:
        # After the pipes are closed, as before: a child still writing to them gets SIGPIPE without waiting on us.
        with contextlib.suppress(ChannelError):
            await sink.abort(str(exc) if isinstance(exc, ProcessError) else f"from_process failed: {exc!r}")
        raise
    return sink.bytes_written


def _watch_unread(stdin: int) -> int | None:
    """A read end of the pipe whose write end is ``stdin``, opened again (``/proc/self/fd``), for :func:`_unread`
    to look into after the command exits; ``None`` where none can be had (no ``/proc``).

    Why a read end, opened only once all is written: a write end kept open would keep the command from seeing
    its input end; held while writing, a read end would let a command that exits early block our writes
    instead of breaking them (``EPIPE``)."""
    try:
        return _reopened(stdin, os.fstat(stdin), os.O_RDONLY)
    except OSError:
        return None


def _unread(watch: int | None, group: int | None) -> int:
    """The bytes still in the command's stdin pipe (``watch``, from :func:`_watch_unread`) once it has exited,
    when they can only have been left unread: 0 when nothing tells (no ``watch``, ``FIONREAD`` refused) or when a
    process of its ``group`` (the command's own process group, if it is ours) lives on and may read them still."""
    unread = queued_bytes(watch) if watch is not None else None
    if not unread or group is None:
        # None: the command shares a group that is not its own (ours, or one the caller chose), so nothing tells
        # whether a process it started lives on to read them (a background reader was taken for one that stopped)
        return 0
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return unread
    except PermissionError:  # a process of it lives, under another user
        pass
    return 0


async def to_process(
    reader: ChannelReader, argv: Sequence[str], *, progress: Progress = None, require_trailer: bool = False,
    exit_timeout: float | None = None, idle_timeout: float | None = None, stall_timeout: float | None = None,
    **popen: Any,
) -> int:
    """Run ``argv`` with the channel as its stdin. Raises :class:`ProcessError` on a non-zero exit, or when it
    exits 0 having stopped reading early (the error says so); channel errors propagate after the process is
    killed. Returns the bytes fed.
    Stopped reading early: it exited before the stream's end reached its stdin, or it left bytes unread in its
    stdin pipe (the error says how many). The pipe is looked into through ``/proc/self/fd`` and ``FIONREAD``
    (Linux); where that cannot be done (another OS, no ``/proc``), input that all fit into the pipe's buffer
    (64 KiB on Linux) before the command exited is not checked. Bytes left unread while another process of its
    group lives on (e.g. ``cmd &`` of a shell, which may read them still) are not counted either, nor any when the
    command has no process group of its own (``start_new_session=False``, a ``process_group`` given).
    ``exit_timeout``: how long the process may run after its stdin is closed (``None``, the default: as long as
    it takes, since a command like ``sort`` does its work only then); past it the process is killed and
    :class:`ProcessError` says so. Its process group is handled as in :func:`from_process`: killed whole when
    this raises. When the stream fails (the writer aborts, the trailer does not match, a cancel) the group is
    killed before the command's stdin is closed: it never sees the end of its input, so it cannot take a short or
    corrupt stream for a whole one and finish its work on it. ``idle_timeout``: most seconds to wait for the
    writer's next message (``None``, the default: no limit), then :class:`~iii_channels.errors.ChannelIdleError`,
    a failed stream like any other (the group killed before the command's stdin closes). ``stall_timeout``: most
    seconds the command may take none of the input waiting in its stdin pipe (``None``, the default: until it
    exits), then :class:`~iii_channels.errors.OutputStalledError`, its group killed the same way; every byte it
    takes counts, so a command that reads slowly, or works for less than ``stall_timeout`` between reads, is not
    stalled.

    Example:
        >>> import asyncio, tempfile
        >>> from pathlib import Path
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[int, bytes]:
        ...     async with local_channel() as ch:
        ...         async def lines() -> AsyncIterable[bytes]:
        ...             yield b"b a c"
        ...         with tempfile.TemporaryDirectory() as tmp:
        ...             out = Path(tmp, "sorted")
        ...             command = ["sh", "-c", f"tr ' ' '\\n' | sort | tr -d '\\n' > {out}"]  # e.g. ["tar", "x"]
        ...             fed, _ = await asyncio.gather(to_process(ch.reader, command, require_trailer=True),
        ...                                           from_iterable(ch.writer, lines()))
        ...             data = out.read_bytes()
        ...         return fed, data
        >>> asyncio.run(demo())
        (5, b'abc')
    """
    try:
        _check_argv(argv)
        _check_exit_timeout(exit_timeout)
        check_timeout(stall_timeout, "stall_timeout")
        _check_popen(popen, ("stdin", "stderr"), "to_process")
        # Before the command starts: a bad progress or idle_timeout must not leave it running.
        source = ChannelSource(reader, require_trailer=require_trailer, progress=progress, label=argv[0],
                               text_limit=0, idle_timeout=idle_timeout)
    except BaseException:
        await asyncio.shield(_release_writer(reader))
        raise
    popen.setdefault("stdout", None)
    group = _own_group(popen)
    # Our own pipe, not asyncio's: its transport closes our end as soon as the command's goes, and with it the
    # bytes the command left in the pipe (and it drops later writes without a word).
    stdin_read, stdin = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=stdin_read, stderr=asyncio.subprocess.PIPE, **popen)
    except BaseException:
        os.close(stdin)
        # Not started: the writer hears now, not at the attach deadline.
        await asyncio.shield(_release_writer(reader))
        raise
    finally:
        os.close(stdin_read)
    stderr = _StderrTail(proc.stderr)
    out = _FdOut(stdin)
    watch: int | None = None
    broken = False
    killed = False
    try:
        try:
            stall = stall_watch(out.watched(), stall_timeout, f"command {' '.join(argv)!r}")
            async for chunk in source.chunks():
                await _write_fd(out, chunk, stall)
        except (BrokenPipeError, ConnectionResetError):
            broken = True  # a write found no reader: bytes went unread, even at the stream's end
            await reader.close_async()
        except BaseException:
            # The transfer failed (the writer aborted, the trailer did not match, a cancel): killed before its
            # stdin closes. Closed first, the command saw a clean end of its input and could finish its work on a
            # short or corrupt one before the kill reached it (measured: 9 of 40 aborted streams, and
            # `cat > part && mv part final` placed a truncated file), though this raises.
            _send_kill(proc, group)
            killed = True
            raise
        else:
            watch = _watch_unread(stdin)
        finally:
            # Closed now, not at its exit: a command that reads to the end (cat, wc, sort) waits for it.
            out.close()
            os.close(stdin)
        exiting = _exit_status(proc, argv, exit_timeout, stderr, "the end of its input", group)
        returncode = await (exiting if stall is None or watch is None else _unless_stalled(exiting, stall, watch))
        tail = await stderr.result()
        if returncode != 0:
            raise ProcessError(argv, returncode, tail)
        if broken or not source.at_eof:
            # Its exit status alone ("failed with exit status 0") hid why: the rest of the stream went nowhere.
            raise ProcessError(argv, returncode, tail, reason=(
                f"stopped reading its input before the end of the stream ({source.bytes_read} bytes had arrived; "
                "exit status 0)"))
        if unread := _unread(watch, proc.pid if group else None):
            # The whole stream fit into the pipe before it exited: no write failed to say it stopped reading.
            raise ProcessError(argv, returncode, tail, reason=(
                f"stopped reading its input before the end of the stream ({unread} of the {source.bytes_read} "
                "bytes fed were left unread; exit status 0)"))
    except BaseException:
        if killed:
            await _until_exited(proc, None)
        else:
            await _kill(proc, group)
        stderr.cancel()
        _close_pipes(proc)
        await asyncio.shield(_release_writer(reader))
        raise
    finally:
        if watch is not None:
            os.close(watch)
    _close_pipes(proc)
    return source.bytes_read


async def _unless_stalled(exiting: Coroutine[Any, Any, int], stall: StallWatch, watch: int) -> int:
    """``exiting`` (the command's exit status), failed with :class:`OutputStalledError` when what is left of its
    input in its stdin pipe (``watch``) is not read for the stall timeout: all of the stream fit in the pipe, so no
    write waited to see it stop reading (``sleep 3600`` fed 64 KiB waited for its exit)."""
    waiting = asyncio.ensure_future(exiting)
    draining = asyncio.ensure_future(stall.until_drained(watch))
    try:
        await asyncio.wait((waiting, draining), return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            draining.result()  # stalled: raised, the caller kills the group
        return await waiting  # an exit first is the answer: bytes it left unread are told as such
    finally:
        for task in (waiting, draining):
            task.cancel()
        await asyncio.gather(waiting, draining, return_exceptions=True)


async def copy(reader: ChannelReader, writer: ChannelWriter, *, idle_timeout: float | None = None) -> int:
    """Relay one channel into another, messages verbatim (text, binary and any trailer), then EOF.

    An error on either side (or a cancellation) aborts the writing side with the error's text and closes the
    reading side, so both peers hear of it at once; then it propagates. ``idle_timeout``: most seconds to wait for
    the reading side's next message (``None``, the default: no limit), then
    :class:`~iii_channels.errors.ChannelIdleError`, a failure like any other.

    Example:
        >>> import asyncio
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> list[object]:
        ...     async with local_channel() as ch:
        ...         async def one(data: bytes) -> AsyncIterable[bytes]:  # any async iterable
        ...             yield data
        ...         onward = await ch.iii.create_channel_async()  # e.g. toward another worker
        ...         relaying = copy(ch.reader, onward.writer)
        ...         return await asyncio.gather(from_iterable(ch.writer, one(b"relayed")), relaying,
        ...                                     ChannelSource(onward.reader, require_trailer=True).read_all())
        >>> asyncio.run(demo())
        [7, 7, b'relayed']
    """
    try:
        # Only the source's idle-bounded receive is used (its reads would check and drop the trailer, relayed here).
        incoming = ChannelSource(reader, verify=False, text_limit=0, idle_timeout=idle_timeout)
        while (message := await incoming._recv()) is not None:
            if isinstance(message, str):
                await writer.send_message_async(message)
            else:
                await writer.write(message)
                incoming.bytes_read += len(message)  # (for the idle error's "after N bytes")
    except BaseException as exc:
        with contextlib.suppress(ChannelError):
            await asyncio.shield(writer.abort(f"copy failed: {exc}"))
        await asyncio.shield(_release_writer(reader))
        raise
    await writer.close_async()
    return incoming.bytes_read
