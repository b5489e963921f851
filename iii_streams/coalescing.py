"""Concurrent reads of a store, read together: the reads that arrive while others run wait, then run as one.

A read that finds no read under way runs at once in its caller's task, as a plain call would. Reads submitted while
others run wait in a queue; as a read ends, or after :data:`PATIENCE_S` if none ended and a lane is free, a task
takes up to ``max_batch`` of the waiting reads and hands them to ``read`` at once (one statement, one trip to a
driver's thread or one pipeline), and gives each its own result. At most ``lanes`` reads run at a time. So N
concurrent reads cost a few calls of ``read`` instead of N, on a few connections. With ``size``, a batch takes about
``max_batch_bytes`` of results by the mean size of those read lately (one a batch before any was read): big values
are read a few at a time. At most ``max_batch`` reads are in batches at once, over all lanes.

A batch's read runs in a task of its own, so that no one caller's time limit cuts it: it ends when its read does, or
as soon as every caller it holds has given up (it is cancelled then), and one that hangs (a half-open connection)
holds one lane, not every read. A caller that gives up is skipped if its read was not taken yet, and its result
dropped if it was.

Guarantees: a read sees every write that completed before it was submitted (its call of ``read`` starts after the
submit); a call of ``read`` that fails fails the reads it held, each with its own copy of the exception, and a result
that is an exception fails its own read alone. Waiting reads are bounded by ``max_pending``: past it ``submit`` fails
at once. After :meth:`ReadCoalescer.close` a submit is refused; reads already submitted still run, until
:meth:`ReadCoalescer.finish` gives up on them.

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
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from .batching import check_sizes, fail_futures
from .errors import StreamBackendError, StreamClosedError

__all__ = ["PATIENCE_S", "ReadCoalescer", "stored_size"]

R = TypeVar("R")
T = TypeVar("T")

PATIENCE_S: Final = 0.002
"""How long reads wait for one under way to end before they start in a free lane of their own."""


def stored_size(text: bytes | str | None) -> int:
    """A stored value's size as a store's read gives it (its JSON text; ``None``: no item), for ``size``: characters
    of a str are bytes enough for the estimate.

    Example:
        >>> stored_size(b'{"a":1}'), stored_size("[]"), stored_size(None)
        (7, 2, 0)
    """
    return 0 if text is None else len(text)


class ReadCoalescer(Generic[R, T]):
    """Runs concurrent reads through ``read(requests) -> one result (or exception) per request, in order``, at most
    ``lanes`` calls at a time (see the module docstring); ``read`` raising fails the reads it was given. ``size``
    tells a result's bytes: a batch then takes about ``max_batch_bytes`` of results, by the mean size of those read
    lately (at most ``max_batch`` reads, at least one)."""

    def __init__(self, read: Callable[[Sequence[R]], Awaitable[Sequence[T | BaseException]]], *, name: str,
                 max_batch: int = 256, max_pending: int = 100_000, lanes: int = 15,
                 size: Callable[[T], int] | None = None, max_batch_bytes: int = 1 << 20) -> None:
        check_sizes(name, max_batch, max_pending)
        if lanes < 1 or max_batch_bytes < 1:
            raise ValueError(f"{name}: lanes and max_batch_bytes must be >= 1, got {lanes}, {max_batch_bytes}")
        self._read = read
        self._name = name
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._lanes = lanes
        self._size = size
        self._max_batch_bytes = max_batch_bytes
        self._mean_size: float | None = None  # bytes of a result, a moving mean (with ``size``; None: none read)
        self._waiting: deque[tuple[R, asyncio.Future[T]]] = deque()
        self._running = 0  # reads under way: callers' own and batches'
        self._in_flight = 0  # the requests of the batches under way
        self._batches: dict[asyncio.Task[None], list[tuple[R, asyncio.Future[T]]]] = {}
        self._kicked = False  # a start of batches is scheduled
        self._idle: list[asyncio.Future[None]] = []  # finish()'s wait for no read under way or waiting
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
                self._measure(results)  # (before the next batch is sized)
            finally:
                self._running -= 1
                self._after_read()
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
            # a lane is free: the reads waiting start there together if those under way have not ended within
            # PATIENCE_S (they may hang, or be big). Not at once: the reads arriving between two ends of fast reads
            # then made batches of their own, and those stayed apart (64 callers settled into 4 batches of 16 and
            # half the throughput)
            self._kicked = True
            loop.call_later(PATIENCE_S, self._kick)
        return await future

    def _kick(self) -> None:
        self._kicked = False
        self._start_batches()

    def _batch_limit(self) -> int:
        if self._size is None:
            return self._max_batch
        # nothing read yet: one a batch (the first reads of a burst of 2 MB values, 16 a batch in 14 lanes, were 450 MB
        # at once before the first of them told their size)
        mean = float(self._max_batch_bytes) if self._mean_size is None else self._mean_size
        return max(1, min(self._max_batch, int(self._max_batch_bytes / max(mean, 1.0))))

    def _measure(self, results: Sequence[T | BaseException]) -> None:
        """Move the mean result size toward this read's (big values make small batches: 256 values of 2 MB in one
        batch held 512 MB at once, and a Redis pipeline that long outlasted its socket's timeout)."""
        size = self._size
        if size is None or not results:
            return
        mean = sum(size(r) for r in results if not isinstance(r, BaseException)) / len(results)
        self._mean_size = mean if self._mean_size is None else 0.75 * self._mean_size + 0.25 * mean

    def _start_batches(self) -> None:
        """Start a batch of the waiting reads in each free lane."""
        waiting = self._waiting
        limit = self._batch_limit()
        while waiting and self._running < self._lanes and self._in_flight < self._max_batch:
            # (at most max_batch reads in flight over all lanes: 15 lanes of 256 values of 2 MB, their sizes not
            # yet known, were 7.5 GB at once)
            room = min(limit, self._max_batch - self._in_flight)
            batch: list[tuple[R, asyncio.Future[T]]] = []
            while waiting and len(batch) < room:
                taken = waiting.popleft()
                if not taken[1].done():  # a caller that gave up before being taken is skipped
                    batch.append(taken)
            if not batch:
                continue
            self._running += 1
            self._in_flight += len(batch)
            task = asyncio.get_running_loop().create_task(self._run_batch(batch), name=f"{self._name} batch")
            self._batches[task] = batch
            # the lane is given back here, not in the coroutine: a task cancelled before its first step never runs
            # its body (a "cancel every task" at shutdown), and its lane stayed taken for good
            task.add_done_callback(functools.partial(self._batch_done, batch))
            abandoned = _Abandoned(task, len(batch))
            for _, future in batch:
                future.add_done_callback(abandoned.one_done)

    async def _run_batch(self, batch: list[tuple[R, asyncio.Future[T]]]) -> None:
        try:
            results = await self._read([request for request, _ in batch])
        except Exception as exc:  # the call failed as a whole: every read in it learns why
            fail_futures(batch, exc, copies=True)
            return
        if len(results) != len(batch):
            fail_futures(batch, StreamBackendError(f"{self._name}: a read returned {len(results)} results for "
                                                   f"{len(batch)} requests"), copies=True)
            return
        self._measure(results)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _batch_done(self, batch: list[tuple[R, asyncio.Future[T]]], task: asyncio.Task[None]) -> None:
        self._batches.pop(task, None)
        self._running -= 1
        self._in_flight -= len(batch)
        # (cancelled, before it ran or while it read: every caller gave up, or the loop is ending)
        fail_futures(batch, StreamClosedError(f"{self._name}: the read was stopped"), copies=True)
        self._after_read()

    def _after_read(self) -> None:
        self._start_batches()
        if not self._running and self._idle and not any(not f.done() for _, f in self._waiting):
            for waiter in self._idle:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle.clear()

    def close(self) -> None:
        """Refuse new reads; those already submitted still run (see :meth:`finish`). Idempotent.

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

    async def finish(self, within: float, error: BaseException) -> None:
        """After :meth:`close`: wait at most ``within`` seconds for the reads submitted to end, then fail those
        still waiting with (copies of) ``error`` and stop those under way in batches, whose callers get it too. A
        store's close calls it before its connections go: a batch started later connected again (a Redis pool
        closed under it left connections open).

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     reads = ReadCoalescer(lambda keys: asyncio.sleep(0, list(keys)), name="echo")
            ...     await reads.finish(1.0, RuntimeError("closed"))  # (closes it too)
            ...     return reads.running, len(reads)
            >>> asyncio.run(demo())
            (0, 0)
        """
        self._closed = True
        if self._running or self._waiting:
            idle = asyncio.get_running_loop().create_future()
            self._idle.append(idle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, within)
        waiting = list(self._waiting)
        self._waiting.clear()
        fail_futures(waiting, error, copies=True)
        batches = list(self._batches.items())
        for task, batch in batches:
            fail_futures(batch, error, copies=True)
            task.cancel()
        # each ends at its next await; their outcomes are their callers' (a cancel of this wait is not swallowed)
        await asyncio.gather(*(task for task, _ in batches), return_exceptions=True)


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
