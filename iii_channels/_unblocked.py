"""Text for a stream with a file descriptor (stderr), written by a daemon thread of that descriptor so that the
caller never waits for it: a progress bar and the command's lines are a courtesy.

Why: with stderr a pipe whose reader is alive but does not read (``2>&1 | less`` paused, a terminal stopped with
Ctrl-S), a write there blocks until the reader reads. Written on the event loop's thread, it froze the loop: a
transfer with ``progress=True`` stopped, and ``iii-channel send``/``serve`` ignored SIGTERM for good.

The thread writes with ``os.write`` on the descriptor, never through the stream's own buffer: a daemon thread
blocked in ``sys.stderr``'s buffered writer holds its lock, and the interpreter's end then fails ("could not
acquire lock for <stderr> at interpreter shutdown"). What waits is bounded: a redraw replaces the undrawn one of the
same ``key`` (a bar), and past :data:`_KEPT` texts the oldest is dropped, counted in a line written before the next.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> write_text(out, "no descriptor: written at once\\n")
    >>> out.getvalue()
    'no descriptor: written at once\\n'
"""

from __future__ import annotations

import atexit
import io
import os
import select
import threading
import time
from collections import deque
from typing import TextIO

# Texts waiting for the descriptor, at most: each is a line of at most a few KiB (a said line, a bar).
_KEPT = 64
# A write under way this long means the reader is not reading: nobody waits for the thread any more then.
_STUCK_S = 0.2
# How long the end of a process (or of iii-channel's main) waits for what is pending, unless the writer is stuck.
EXIT_WAIT_S = 0.5
# How long a writer thread with nothing to write waits for more before it ends.
_IDLE_EXIT_S = 1.0


class _FdWriter:
    """The daemon thread writing one descriptor, and what waits for it."""

    def __init__(self, fd: int, file: tuple[int, int] | None) -> None:
        self.fd = fd
        # what the descriptor was open on: a number closed and opened again on another file (a bar's stream closed
        # while its texts waited) must never get them, nor an error of the old one
        self.file = file
        self.gone = False
        self._cond = threading.Condition()
        self._pending: deque[tuple[object | None, bytes]] = deque()
        self._dropped = 0
        self._writing_since: float | None = None
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def submit(self, data: bytes, key: object | None = None) -> None:
        with self._cond:
            if key is not None:
                for at, (pending_key, _) in enumerate(self._pending):
                    if pending_key is key:
                        del self._pending[at]
                        break
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"iii-channels-fd{self.fd}-writer",
                                                daemon=True)
                self._thread.start()
            # A burst faster than the thread (which needs the GIL) waits for room while the descriptor takes
            # bytes, as a plain write would; only a stuck one loses lines (dropping at once lost 872 of 1,000 lines
            # written in a loop to a file, each "dropped: not being read").
            give_up = time.monotonic() + _STUCK_S
            while len(self._pending) >= _KEPT and not self.stuck() and (left := give_up - time.monotonic()) > 0:
                self._cond.wait(left)
            self._pending.append((key, data))
            while len(self._pending) > _KEPT:
                self._pending.popleft()
                self._dropped += 1
            self._cond.notify_all()

    def stuck(self) -> bool:
        since = self._writing_since
        return since is not None and time.monotonic() - since >= _STUCK_S

    def take_error(self) -> OSError | None:
        """The last write's error not yet told (the thread cannot warn itself: its warning would go to stderr)."""
        with self._cond:
            error, self._error = self._error, None
            return error

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending, ``timeout`` s at most and not at all once the writer is stuck; whether
        everything was written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._writing_since is not None:
                now = time.monotonic()
                since = self._writing_since
                until_stuck = _STUCK_S if since is None else since + _STUCK_S - now
                left = min(deadline - now, until_stuck)
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._cond.wait(_IDLE_EXIT_S)
                    if not self._pending:
                        # ends when idle (the next text starts another): a thread per descriptor for the life of
                        # the process was a thread left running by every library call that drew a bar
                        self._thread = None
                        return
                if self.gone or _file_of(self.fd) != self.file:
                    self.gone = True  # its stream was closed: what waits for it goes nowhere
                    self._pending.clear()
                    self._thread = None
                    self._cond.notify_all()
                    return
                _, data = self._pending.popleft()
                dropped, self._dropped = self._dropped, 0
                self._writing_since = time.monotonic()
            if dropped:
                data = (f"[{dropped} earlier line(s) dropped: this stream was not being read]\n".encode()
                        + data)
            error: OSError | None = None
            try:
                write_all(self.fd, data)
            except OSError as exc:  # a reader gone, /dev/full, a descriptor closed: this text is lost
                error = exc
            with self._cond:
                self._writing_since = None
                if error is not None:
                    self._error = error
                self._cond.notify_all()


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``, blocking; where the description was made non-blocking (by whoever shares
    it), waiting for room instead of failing."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # someone made the shared description non-blocking: wait for room instead
            _room(fd, 1.0)


_writers: dict[int, _FdWriter] = {}
_writers_lock = threading.Lock()


def _file_of(fd: int) -> tuple[int, int] | None:
    """The device and inode ``fd`` is open on (``None`` when it is not open)."""
    try:
        found = os.fstat(fd)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _writer(fd: int) -> _FdWriter:
    file = _file_of(fd)
    with _writers_lock:
        writer = _writers.get(fd)
        if writer is not None and writer.file != file:
            with writer._cond:  # the number now names another file: the old one's texts and errors go with it
                writer.gone = True
                writer._pending.clear()
                writer._cond.notify_all()
            writer = None
        if writer is None:
            if not _writers:
                atexit.register(drain_all, EXIT_WAIT_S)
            writer = _writers[fd] = _FdWriter(fd, file)
        return writer


def _forget_writers() -> None:
    # a forked child has none of the parent's threads, and their locks may be held
    global _writers_lock
    _writers_lock = threading.Lock()
    _writers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers)


def drain_all(timeout: float = EXIT_WAIT_S) -> None:
    """Give what is pending ``timeout`` s at most to be written (none once a writer is stuck): at a process's end, so
    its last lines appear when stderr works."""
    deadline = time.monotonic() + timeout
    for writer in list(_writers.values()):
        writer.drain(max(0.0, deadline - time.monotonic()))


def _fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):  # in memory, or closed
        return None


def _room(fd: int, timeout: float = 0.0) -> bool:
    """Whether a write to ``fd`` would not wait (a regular file always has room), within ``timeout`` s."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLOUT for _, events in poller.poll(timeout * 1000))
    except (OSError, ValueError):
        return False


def write_text(stream: TextIO, text: str, key: object | None = None) -> None:
    """Write ``text`` to ``stream`` without waiting for its reader: through the descriptor's thread when it has one,
    the undrawn text of the same ``key`` replaced; directly (and flushed) when it has none (``io.StringIO``). Raises
    ``OSError`` or ``ValueError`` when the stream cannot be written: a closed one, or the error of an earlier text's
    write on its descriptor."""
    fd = _fd(stream)
    if fd is None:
        stream.write(text)
        stream.flush()
        return
    writer = _writer(fd)
    error = writer.take_error()
    if error is not None:
        raise error
    if not writer.stuck() and _room(fd):
        # whatever others left in the stream's own buffer goes out first; with room, that write does not wait
        stream.flush()
    writer.submit(text.encode(getattr(stream, "encoding", None) or "utf-8", "backslashreplace"), key)


def settle(stream: TextIO, timeout: float) -> None:
    """Give what is pending for ``stream``'s descriptor ``timeout`` s at most to be written (none once its writer is
    stuck), then raise the error of a write that failed meanwhile, as :func:`write_text` would have."""
    fd = _fd(stream)
    writer = None if fd is None else _writers.get(fd)
    if writer is None:
        return
    writer.drain(timeout)
    error = writer.take_error()
    if error is not None:
        raise error
