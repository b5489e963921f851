"""Group commit for stream stores: writes submitted under one key run in batches, one batch at a time per key.

A caller submits one request and awaits its own result. The first request for an idle key starts a runner task
that takes up to ``max_batch`` waiting requests, hands them to the store's batch function (one transaction, one
``MULTI``/``EXEC``), resolves every caller's future with its own result, and repeats while requests are
waiting. Inside one process this serializes the writers of a key (no optimistic retries among them) and turns
N round trips into one.

Guarantees: each request is applied at most once and its caller learns the outcome (a result, its own
exception, or the batch's exception); a caller that stops waiting (timeout, cancellation) before its request
is taken is skipped, so the write never happens; a caller that stops waiting later leaves the write to the store:
the stores of this package withdraw it while it has not been sent to be committed
(:class:`~iii_streams.base.WriteProgress`), and let it finish after that.
Waiting requests per key are bounded by ``max_pending``; past it ``submit`` fails at once.
A batch may also hand a request on instead of answering it (:class:`Requeue`): it joins the end of another key's
queue with its caller still waiting, before the next batch of its old key is taken, whatever that queue holds and
even after :meth:`~KeyedBatcher.aclose` began (an accepted request is never refused later; the close waits for it).

Example:
    >>> import asyncio
    >>> async def demo():
    ...     seen = []
    ...     async def run(key, requests):
    ...         seen.append(list(requests))
    ...         return [r * 10 for r in requests]
    ...     batcher = KeyedBatcher(run, name="demo")
    ...     results = await asyncio.gather(*(batcher.submit("k", n) for n in range(4)))
    ...     await batcher.aclose()
    ...     return results, seen
    >>> asyncio.run(demo())
    ([0, 10, 20, 30], [[0, 1, 2, 3]])
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from .errors import StreamBackendError, StreamClosedError

__all__ = ["BatchRunner", "KeyedBatcher", "Requeue"]

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
T = TypeVar("T")


class Requeue(Generic[K]):
    """A batch's answer for a request it hands to the end of ``key``'s queue instead of answering it: its caller
    keeps waiting, now for that queue's batch. Requests handed on by one batch join in the batch's order, before
    the batcher takes its next batch, so no later request of the old queue can pass them.

    Example:
        >>> import asyncio
        >>> async def demo():
        ...     async def run(key, requests):
        ...         return [Requeue("slow") if key == "fast" else f"{r} via {key}" for r in requests]
        ...     batcher = KeyedBatcher(run, name="demo")
        ...     return await batcher.submit("fast", "w")
        >>> asyncio.run(demo())
        'w via slow'
    """

    __slots__ = ("key",)

    def __init__(self, key: K) -> None:
        self.key = key


BatchRunner = Callable[[K, Sequence[R]], Awaitable[Sequence[T | BaseException | Requeue[K]]]]
"""``run(key, requests) -> one result, exception or Requeue per request, in order``; raising fails the whole batch."""


class KeyedBatcher(Generic[K, R, T]):
    """Runs the requests of each key in batches through ``run`` (see the module docstring)."""

    def __init__(
        self, run: BatchRunner[K, R, T], *, name: str, max_batch: int = 256, max_pending: int = 100_000
    ) -> None:
        check_sizes(name, max_batch, max_pending)
        self._run = run
        self._name = name
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: dict[K, deque[tuple[R, asyncio.Future[T]]]] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._arrivals: dict[K, asyncio.Future[None]] = {}  # (:meth:`arrival`)
        self._closed = False

    def __len__(self) -> int:
        """Requests waiting to be taken, over every key."""
        return sum(len(queue) for queue in self._pending.values())

    def active(self, key: K) -> bool:
        """Whether ``key`` has requests waiting or a batch running (a request submitted now runs after them).

        Example:
            >>> KeyedBatcher(lambda key, requests: None, name="b").active("k")
            False
        """
        return key in self._pending

    def has_room(self, key: K) -> bool:
        """Whether ``key``'s queue takes one more request (fewer than ``max_pending`` wait in it).

        Example:
            >>> KeyedBatcher(lambda key, requests: None, name="b", max_pending=1).has_room("k")
            True
        """
        queue = self._pending.get(key)
        return queue is None or len(queue) < self._max_pending

    def idle(self) -> bool:
        """Whether no key has requests waiting or a batch running.

        Example:
            >>> KeyedBatcher(lambda key, requests: None, name="b").idle()
            True
        """
        return not self._pending

    def take(self, key: K, pick: Callable[[R], bool], *, limit: int = 1024) -> list[tuple[R, asyncio.Future[T]]]:
        """Remove and return, in order, the waiting requests of ``key`` that ``pick`` chooses, among its first
        ``limit`` (their callers still waiting): a running batch may answer them itself, as when a lost race lets
        the writes of other items go first. ``pick`` sees each in queue order (it may keep state).

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     async def run(key, requests):
            ...         return list(requests)
            ...     batcher = KeyedBatcher(run, name="b")
            ...     calls = [asyncio.ensure_future(batcher.submit("k", n)) for n in range(4)]
            ...     await asyncio.sleep(0)  # all four queued, their runner not started yet
            ...     taken = batcher.take("k", lambda n: n % 2 == 1)
            ...     for _, future in taken:
            ...         future.set_result(-1)  # answered by whoever took them
            ...     return [n for n, _ in taken], await asyncio.gather(*calls)
            >>> asyncio.run(demo())
            ([1, 3], [0, -1, 2, -1])
        """
        queue = self._pending.get(key)
        if not queue:
            return []
        taken: list[tuple[R, asyncio.Future[T]]] = []
        kept: list[tuple[R, asyncio.Future[T]]] = []
        for index, (request, future) in enumerate(queue):
            if index >= limit:
                kept.append((request, future))
            elif not future.done():  # a caller that gave up is skipped, as a batch skips it
                (taken if pick(request) else kept).append((request, future))
        if taken:
            queue.clear()
            queue.extend(kept)
        return taken

    def arrival(self, key: K) -> asyncio.Future[None]:
        """A future done when the next request is queued under ``key`` (a batch waiting out a backoff wakes to let
        it pass, see :meth:`take`).

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     batcher = KeyedBatcher(lambda key, requests: asyncio.sleep(0, list(requests)), name="b")
            ...     arrived = batcher.arrival("k")
            ...     await batcher.submit("k", 1)
            ...     return arrived.done()
            >>> asyncio.run(demo())
            True
        """
        waiter = self._arrivals.get(key)
        if waiter is None or waiter.done():
            waiter = self._arrivals[key] = asyncio.get_running_loop().create_future()
        return waiter

    async def submit(self, key: K, request: R) -> T:
        """Queue ``request`` under ``key`` and wait for its own result.

        Example:
            >>> import asyncio
            >>> async def double(key, requests):
            ...     return [r * 2 for r in requests]
            >>> async def demo():
            ...     batcher = KeyedBatcher(double, name="doubler")
            ...     return await batcher.submit("k", 21)
            >>> asyncio.run(demo())
            42
        """
        if self._closed:
            raise StreamClosedError(f"{self._name} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(key, request, future)
        return await future

    def _enqueue(self, key: K, request: R, future: asyncio.Future[T], bounded: bool = True) -> None:
        """Append to ``key``'s queue, starting its runner if it has none (``bounded``: raises past
        ``max_pending``)."""
        queue = self._pending.get(key)
        if queue is None:
            queue = self._pending[key] = deque()
            runner = asyncio.get_running_loop().create_task(self._drain(key, queue),
                                                            name=f"{self._name} batch runner")
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        elif bounded and len(queue) >= self._max_pending:
            error = StreamBackendError(f"{self._name}: {len(queue)} requests already wait in this queue "
                                       "(max_pending); this one was not queued and not applied; try again later")
            error.applied = False  # refused before anything was queued or sent
            raise error
        queue.append((request, future))
        if self._arrivals:
            waiter = self._arrivals.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _requeue(self, key: K, request: R, future: asyncio.Future[T]) -> None:
        """Hand a taken request on to ``key``'s queue (:class:`Requeue`). It was accepted already: neither
        ``max_pending`` nor a close since refuses it (:meth:`aclose` waits for it as for a running batch)."""
        self._enqueue(key, request, future, bounded=False)

    async def _drain(self, key: K, queue: deque[tuple[R, asyncio.Future[T]]]) -> None:
        try:
            while queue:
                batch: list[tuple[R, asyncio.Future[T]]] = []
                while queue and len(batch) < self._max_batch:
                    request, future = queue.popleft()
                    if not future.done():  # a caller that gave up before being taken is skipped
                        batch.append((request, future))
                if not batch:
                    continue
                try:
                    results = await self._run(key, [request for request, _ in batch])
                except asyncio.CancelledError:
                    fail_futures(batch, StreamClosedError(f"{self._name} was closed while a write was in flight"))
                    raise
                except BaseException as exc:  # the batch failed as a whole: every caller in it learns why
                    fail_futures(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                if len(results) != len(batch):
                    fail_futures(batch, StreamBackendError(f"{self._name}: batch returned {len(results)} results for "
                                                    f"{len(batch)} requests"))
                    continue
                for (request, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Requeue):
                        self._requeue(result.key, request, future)
                    elif isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            if self._pending.get(key) is queue:
                del self._pending[key]
            fail_futures(list(queue), StreamClosedError(f"{self._name} was closed before the write ran"))
            queue.clear()

    async def aclose(self) -> None:
        """Refuse new requests, let running batches finish, and fail what never started. Idempotent.

        Example:
            >>> import asyncio
            >>> async def echo(key, requests):
            ...     return list(requests)
            >>> async def demo():
            ...     batcher = KeyedBatcher(echo, name="echo")
            ...     await batcher.aclose()
            ...     await batcher.submit("k", 1)
            >>> asyncio.run(demo())
            Traceback (most recent call last):
            iii_streams.errors.StreamClosedError: echo is closed
        """
        self._closed = True
        for queue in self._pending.values():
            fail_futures(list(queue), StreamClosedError(f"{self._name} was closed before the write ran"))
            queue.clear()
        while self._runners:  # a batch may hand requests on to a queue whose runner starts meanwhile
            await asyncio.gather(*tuple(self._runners), return_exceptions=True)


def check_sizes(name: str, max_batch: int, max_pending: int) -> None:
    """Refuse a batch or a queue bound below 1 (a ``ValueError`` naming both)."""
    if max_batch < 1 or max_pending < 1:
        raise ValueError(f"{name}: max_batch and max_pending must be >= 1, got {max_batch}, {max_pending}")


def fail_futures(batch: Sequence[tuple[object, asyncio.Future[T]]], exc: BaseException, *,
                 copies: bool = False) -> None:
    """Fail every future of ``batch`` (``(request, future)`` pairs) not yet done with ``exc``; ``copies``: each with
    its own copy of it, caused by what ``exc`` was (one instance raised in many tasks gathered their tracebacks)."""
    for _, future in batch:
        if not future.done():
            future.set_exception(_copy(exc) if copies else exc)


def _copy(exc: BaseException) -> BaseException:
    try:
        copied = copy.copy(exc)
    except Exception:  # an exception that cannot be rebuilt from its arguments: shared
        return exc
    copied.__cause__, copied.__context__ = exc.__cause__, exc.__context__
    copied.__suppress_context__ = exc.__suppress_context__
    return copied
