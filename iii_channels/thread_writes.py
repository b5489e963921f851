"""Writes to a file descriptor that has no non-blocking form we may use, made by a daemon thread of its own so that
the event loop never waits for them.

Why: a pseudo-terminal's master (``/dev/ptmx``) cannot be opened again as a twin whose mode is ours (that opens a
new terminal), and its mode is not ours to change. The loop says it is writable with one byte of room, and a write
of more then blocks until its terminal's side reads: ``to_fd`` into a master whose terminal read nothing held the
whole event loop (1 run in 4 of a 1 MiB copy into an unread terminal in canonical mode).

What waits is bounded: one slice of at most :data:`SLICE` bytes at a time, and the thread ends once closed. A write
the caller stopped waiting for (a cancelled copy) still completes when the terminal reads, as bytes the kernel took
would; the next one is never started.

Example:
    >>> import asyncio, os
    >>> async def demo() -> bytes:
    ...     read_end, write_end = os.pipe()
    ...     writes = ThreadWrites(write_end)
    ...     try:
    ...         taken = await writes.write(memoryview(b"hello"))
    ...     finally:
    ...         writes.close()
    ...         os.close(write_end)
    ...     data = os.read(read_end, 100)
    ...     os.close(read_end)
    ...     return data[:taken]
    >>> asyncio.run(demo())
    b'hello'
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Final

SLICE: Final = 64 * 1024
"""Most bytes one write of the thread is given: what may still reach the fd after its copy stopped waiting."""


class ThreadWrites:
    """A daemon thread that writes ``fd`` with blocking ``os.write`` calls, one slice at a time, for the loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._cond = threading.Condition()
        self._job: tuple[memoryview, asyncio.AbstractEventLoop, asyncio.Future[int]] | None = None
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=f"iii-channels-write-fd{fd}", daemon=True)
        self.thread.start()

    async def write(self, view: memoryview) -> int:
        """Write the start of ``view`` (at most :data:`SLICE` bytes) in the thread; the bytes written.

        Example:
            >>> import asyncio, os
            >>> async def demo() -> int:
            ...     read_end, write_end = os.pipe()
            ...     writes = ThreadWrites(write_end)
            ...     taken = await writes.write(memoryview(b"x" * 100_000))
            ...     writes.close()
            ...     os.close(read_end)
            ...     os.close(write_end)
            ...     return taken
            >>> asyncio.run(demo()) <= SLICE
            True
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        with self._cond:
            if self._closed:
                raise ValueError(f"writes to fd {self.fd} were closed")
            if self._job is not None:  # one caller at a time, as one copy writes one fd
                raise RuntimeError(f"fd {self.fd} already has a write under way")
            self._job = (view[:SLICE], loop, done)
            self._cond.notify()
        return await done

    def close(self) -> None:
        """End the thread once its write under way (if any) returns; no other write is started.

        Example:
            >>> writes = ThreadWrites(os.open(os.devnull, os.O_WRONLY))
            >>> writes.close()
            >>> writes.thread.join(5)
            >>> writes.thread.is_alive()
            False
            >>> os.close(writes.fd)
        """
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._job is None:
                    return
                view, loop, done = self._job
            try:
                result: int | BaseException = os.write(self.fd, view)
            except OSError as exc:
                result = exc
            with self._cond:
                self._job = None
            try:
                loop.call_soon_threadsafe(_settle, done, result)
            except RuntimeError:  # the loop is gone: nobody waits any more
                pass


def _settle(done: asyncio.Future[int], result: int | BaseException) -> None:
    if done.done():  # its waiter was cancelled
        return
    if isinstance(result, BaseException):
        done.set_exception(result)
    else:
        done.set_result(result)
