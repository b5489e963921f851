"""Concurrent reads of a store, read together: the reads that arrive while ``lanes`` reads run wait, then run as one.

A read that finds no read under way runs at once in its caller's task, as a plain call would. Reads submitted while
others run wait in a queue; at the end of the event loop's pass in which they came (if a lane is free), or as a read
ends, a task takes up to ``max_batch`` of the waiting reads and hands them to ``read`` at once (one statement, one trip
to a driver's thread or one pipeline), and gives each its own result. At most ``lanes`` reads run at a time. So N
concurrent reads cost a few calls of ``read`` instead of N, on a few connections.

A batch's read runs in a task of its own, so that no one caller's time limit cuts it: it ends when its read does, or
as soon as every caller it holds has given up (it is cancelled then), and one that hangs (a half-open connection)
holds one lane, not every read. A caller that gives up is skipped if its read was not taken yet, and its result
dropped if it was.

Guarantees: a read sees every write that completed before it was submitted (its call of ``read`` starts after the
submit); a call of ``read`` that fails fails the reads it held, each with its own copy of the exception, and a result
that is an exception fails its own read alone. Waiting reads are bounded by ``max_pending``: past it ``submit`` fails
at once. After :meth:`ReadCoalescer.close` a submit is refused; reads already submitted still run.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     calls = []
    ...     async def read(keys):
    ...         calls.append(list(keys))
    ...         await asyncio.sleep(0)
    ...         return [k.upper() for k in keys]
    ...     reads = ReadCoalescer(read, name="demo", lanes=1)
    ...     results = await asyncio.gather(*(reads.submit(k) for k in "abcd"))
    ...     return results, calls
    >>> asyncio.run(demo())
    (['A', 'B', 'C', 'D'], [['a'], ['b', 'c', 'd']])
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from .batching import check_sizes
from .errors import StreamBackendError, StreamClosedError

__all__ = ["ReadCoalescer"]

R = TypeVar("R")
T = TypeVar("T")


class ReadCoalescer(Generic[R, T]):
    """Runs concurrent reads through ``read(requests) -> one result (or exception) per request, in order``, at most
    ``lanes`` calls at a time (see the module docstring); ``read`` raising fails the reads it was given."""

    def __init__(self, read: Callable[[Sequence[R]], Awaitable[Sequence[T | BaseException]]], *, name: str,
                 max_batch: int = 256, max_pending: int = 100_000, lanes: int = 4) -> None:
        check_sizes(name, max_batch, max_pending)
        if lanes < 1:
            raise ValueError(f"{name}: lanes must be >= 1, got {lanes}")
        self._read = read
        self._name = name
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._lanes = lanes
        self._waiting: deque[tuple[R, asyncio.Future[T]]] = deque()
        self._running = 0  # reads under way: callers' own and batches'
        self._batches: set[asyncio.Task[None]] = set()
        self._kicked = False  # a start of batches is scheduled
        self._closed = False

    def __len__(self) -> int:
        """Reads waiting to be taken."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Reads under way (at most ``lanes``)."""
        return self._running

    async def submit(self, request: R) -> T:
        """Read ``request``: at once when no read runs, else with the reads waiting beside it.

        Example:
            >>> import asyncio
            >>> async def read(keys):
            ...     return [len(k) for k in keys]
            >>> asyncio.run(ReadCoalescer(read, name="lengths").submit("four"))
            4
        """
        if self._closed:
            raise StreamClosedError(f"{self._name} is closed")
        if not self._running and not self._waiting:
            self._running += 1
            try:
                results = await self._read((request,))
            finally:
                self._running -= 1
                self._start_batches()
            if len(results) != 1:
                raise StreamBackendError(f"{self._name}: a read returned {len(results)} results for 1 request")
            own = results[0]
            if isinstance(own, BaseException):
                raise own
            return own
        if len(self._waiting) >= self._max_pending:
            raise StreamBackendError(f"{self._name}: {len(self._waiting)} reads already wait (max_pending); "
                                     "try again later")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((request, future))
        if self._running < self._lanes and not self._kicked:
            # a lane is free (the reads under way may hang or be big): the reads submitted in this pass of the
            # event loop start there together, at the end of the pass
            self._kicked = True
            loop.call_soon(self._kick)
        return await future

    def _kick(self) -> None:
        self._kicked = False
        self._start_batches()

    def _start_batches(self) -> None:
        """Start a batch of the waiting reads in each free lane."""
        waiting = self._waiting
        while waiting and self._running < self._lanes:
            batch: list[tuple[R, asyncio.Future[T]]] = []
            while waiting and len(batch) < self._max_batch:
                taken = waiting.popleft()
                if not taken[1].done():  # a caller that gave up before being taken is skipped
                    batch.append(taken)
            if not batch:
                continue
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._run_batch(batch), name=f"{self._name} batch")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            abandoned = _Abandoned(task, len(batch))
            for _, future in batch:
                future.add_done_callback(abandoned.one_done)

    async def _run_batch(self, batch: list[tuple[R, asyncio.Future[T]]]) -> None:
        try:
            try:
                results = await self._read([request for request, _ in batch])
            except asyncio.CancelledError:
                # every caller gave up (or the loop is ending): nobody to tell but those still waiting, if any
                _fail_each(batch, StreamClosedError(f"{self._name}: the read was stopped"))
                raise
            except Exception as exc:  # the call failed as a whole: every read in it learns why
                _fail_each(batch, exc)
                return
            if len(results) != len(batch):
                _fail_each(batch, StreamBackendError(f"{self._name}: a read returned {len(results)} results for "
                                                     f"{len(batch)} requests"))
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running -= 1
            self._start_batches()

    def close(self) -> None:
        """Refuse new reads; those already submitted still run. Idempotent.

        Example:
            >>> import asyncio
            >>> async def read(keys):
            ...     return list(keys)
            >>> async def demo():
            ...     reads = ReadCoalescer(read, name="echo")
            ...     reads.close()
            ...     await reads.submit(1)
            >>> asyncio.run(demo())
            Traceback (most recent call last):
            iii_streams.errors.StreamClosedError: echo is closed
        """
        self._closed = True


class _Abandoned:
    """Cancels a batch's read once every caller it holds is done: given up (cancelled, timed out) or answered (the
    read's own answers come after it ended, when the cancel changes nothing)."""

    __slots__ = ("_left", "_task")

    def __init__(self, task: asyncio.Task[None], callers: int) -> None:
        self._task = task
        self._left = callers

    def one_done(self, _future: object) -> None:
        self._left -= 1
        if not self._left:
            self._task.cancel()


def _fail_each(batch: Sequence[tuple[object, asyncio.Future[T]]], exc: BaseException) -> None:
    """Fail each waiting future with its own copy of ``exc`` (one instance raised in many tasks gathered their
    tracebacks and notes), the copy caused by what ``exc`` was."""
    for _, future in batch:
        if not future.done():
            future.set_exception(_copy(exc))


def _copy(exc: BaseException) -> BaseException:
    try:
        copied = copy.copy(exc)
    except Exception:  # an exception that cannot be rebuilt from its arguments: shared, as before
        return exc
    copied.__cause__, copied.__context__ = exc.__cause__, exc.__context__
    copied.__suppress_context__ = exc.__suppress_context__
    return copied
