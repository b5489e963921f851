"""Concurrent reads of a store, read together: the reads that arrive while one runs wait for it, then run as one.

A lone read runs at once in its caller's task, as a plain call would. While it runs, other reads wait in a queue;
when it ends, the first caller still waiting is woken to read for up to ``max_batch`` of them at once (one
statement, one trip to a driver's thread) and hands each its own result. So N concurrent reads cost about two calls
of ``read`` instead of N, on one connection instead of N.

Every read runs in the task of a caller waiting for it, under that caller's time limit: no read runs for nobody, and
none outlives every caller that wanted it. When that caller gives up (its timeout, a cancel), the other reads it
held go back to the head of the queue, for the next caller to read.

Guarantees: a read sees every write that completed before it was submitted (its call of ``read`` starts after the
submit); a caller that stops waiting is skipped if its read was not taken yet, and its result dropped if it was; a
call of ``read`` that fails fails the reads it held, with its exception, and a result that is an exception fails its
own read alone. Waiting reads are bounded by
``max_pending``: past it ``submit`` fails at once. After :meth:`ReadCoalescer.close` a submit is refused and the
reads still waiting fail with :class:`~iii_streams.errors.StreamClosedError`; a read under way ends as it would.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     calls = []
    ...     async def read(keys):
    ...         calls.append(list(keys))
    ...         await asyncio.sleep(0)
    ...         return [k.upper() for k in keys]
    ...     reads = ReadCoalescer(read, name="demo")
    ...     results = await asyncio.gather(*(reads.submit(k) for k in "abcd"))
    ...     return results, calls
    >>> asyncio.run(demo())
    (['A', 'B', 'C', 'D'], [['a'], ['b', 'c', 'd']])
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar, cast

from .batching import check_sizes, fail_futures
from .errors import StreamBackendError, StreamClosedError

__all__ = ["ReadCoalescer"]

R = TypeVar("R")
T = TypeVar("T")

_LEAD: Final = object()  # a waiting caller's wake-up that makes it read the next batch


class ReadCoalescer(Generic[R, T]):
    """Runs concurrent reads through ``read(requests) -> one result (or exception) per request, in order`` (see the
    module docstring); ``read`` raising fails the reads it was given."""

    def __init__(self, read: Callable[[Sequence[R]], Awaitable[Sequence[T | BaseException]]], *, name: str,
                 max_batch: int = 256, max_pending: int = 100_000) -> None:
        check_sizes(name, max_batch, max_pending)
        self._read = read
        self._name = name
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._waiting: deque[tuple[R, asyncio.Future[Any]]] = deque()
        self._busy = False  # a caller reads, or was woken to read
        self._closed = False

    def __len__(self) -> int:
        """Reads waiting to be taken."""
        return len(self._waiting)

    async def submit(self, request: R) -> T:
        """Read ``request``: at once when no read runs, else with the reads that wait beside it.

        Example:
            >>> import asyncio
            >>> async def read(keys):
            ...     return [len(k) for k in keys]
            >>> asyncio.run(ReadCoalescer(read, name="lengths").submit("four"))
            4
        """
        if self._closed:
            raise StreamClosedError(f"{self._name} is closed")
        others: list[tuple[R, asyncio.Future[Any]]] = []
        if self._busy:
            if len(self._waiting) >= self._max_pending:
                raise StreamBackendError(f"{self._name}: {len(self._waiting)} reads already wait (max_pending); "
                                         "try again later")
            woken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((request, woken))
            try:
                outcome = await woken
            except asyncio.CancelledError:
                if woken.done() and not woken.cancelled() and woken.result() is _LEAD:
                    self._hand_on()  # woken to read, then cancelled before it could: the next caller reads
                raise
            if outcome is not _LEAD:
                return cast(T, outcome)
            while self._waiting and len(others) < self._max_batch - 1:
                taken = self._waiting.popleft()
                if not taken[1].done():  # a caller that gave up before being taken is skipped
                    others.append(taken)
        else:
            self._busy = True
        try:
            results = await self._read([request, *(r for r, _ in others)])
        except asyncio.CancelledError:
            self._waiting.extendleft(reversed(others))  # this caller gave up: the next one reads for the others
            raise
        except BaseException as exc:
            fail_futures(others, exc)
            raise
        finally:
            self._hand_on()
        if len(results) != len(others) + 1:
            error = StreamBackendError(f"{self._name}: a read returned {len(results)} results for "
                                       f"{len(others) + 1} requests")
            fail_futures(others, error)
            raise error
        for (_, future), result in zip(others, results[1:], strict=True):
            if not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        own = results[0]
        if isinstance(own, BaseException):
            raise own
        return own

    def _hand_on(self) -> None:
        """After a read: wake the first caller still waiting to read next, else none reads."""
        waiting = self._waiting
        while waiting:
            _, future = waiting.popleft()
            if not future.done():
                if self._closed:
                    future.set_exception(StreamClosedError(f"{self._name} was closed before the read ran"))
                    continue
                future.set_result(_LEAD)
                return
        self._busy = False

    def close(self) -> None:
        """Refuse new reads and fail those waiting (a read under way ends as it would). Idempotent.

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
        fail_futures(list(self._waiting), StreamClosedError(f"{self._name} was closed before the read ran"))
        self._waiting.clear()
