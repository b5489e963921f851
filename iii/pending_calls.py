"""The futures behind calls waiting for a result and their deadlines (one event loop, one timer per distinct timeout).

The protocol core (:class:`iii.protocol.client.ClientSession`) decides *which* call ends and how; this object
only holds the future the caller awaits and settles it.

Example:
    >>> import asyncio
    >>> async def demo() -> object:
    ...     calls = PendingCalls(asyncio.get_running_loop())
    ...     future = calls.add("i1", "f", timeout_ms=1000, on_expire=lambda iid: None)
    ...     calls.succeed("i1", 42)
    ...     return await future
    >>> asyncio.run(demo())
    42
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from .errors import ShuttingDownError

__all__ = ["Expire", "LoopWaiter", "PendingCalls", "Settle", "ThreadWaiter"]

Expire = Callable[[str], "str | BaseException | None"]
"""``on_expire(invocation_id)``, run as a call times out; a text it returns is added to the ``TimeoutError``'s message
(``"it was never sent ..."``), an exception it returns is raised instead of the ``TimeoutError``."""


class Settle(Protocol):
    """What a waiting call is settled through: an :class:`asyncio.Future`, a :class:`ThreadWaiter` or a
    :class:`LoopWaiter`."""

    # The asyncio.Future methods of the same names.
    def done(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


class ThreadWaiter:
    """A call result that a plain thread blocks on, settled from the loop's thread with no hop back onto a loop.

    A sync ``trigger`` waits here instead of on a ``concurrent.futures.Future`` chained to a task: the loop
    sets the result and the waiting thread wakes, one lock release in all.

    Example:
        >>> waiter = ThreadWaiter()
        >>> waiter.set_result(42)
        >>> waiter.wait(1.0, lambda: True)
        42
    """

    __slots__ = ("_done", "_error", "_lock", "_result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held until settled: wait() blocks on it
        self._done = False
        self._result: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        """Whether the result or the error is set."""
        return self._done

    def set_result(self, result: Any) -> None:
        """Settle with ``result`` and wake the waiter (ignored once settled)."""
        if not self._done:
            self._result, self._done = result, True
            self._lock.release()

    def set_exception(self, exception: BaseException) -> None:
        """Settle with ``exception``, raised by :meth:`wait` (ignored once settled)."""
        if not self._done:
            self._error, self._done = exception, True
            self._lock.release()

    def wait(self, check_every: float, alive: Callable[[], bool]) -> Any:
        """Block until settled; the result, or raise the error. Every ``check_every`` seconds ``alive()`` is
        asked whether whoever settles it still runs; :class:`ShuttingDownError` when not (never a silent hang)."""
        while not self._lock.acquire(timeout=check_every):
            if not alive():
                raise ShuttingDownError()
        error = self._error
        if error is not None:
            # Given up, not kept: the error's traceback holds this frame, which holds this waiter; kept here it made
            # a cycle of each failed call that only a full collection freed.
            self._error = None
            try:
                raise error
            finally:
                del error
        return self._result


class LoopWaiter:
    """A call result awaited on another event loop: settled from the client's loop with one hop onto the
    waiting loop (instead of a task on the client's loop chained to a concurrent future, then to this one).

    Example:
        >>> import asyncio
        >>> async def demo() -> int:
        ...     future = asyncio.get_running_loop().create_future()
        ...     LoopWaiter(asyncio.get_running_loop(), future).set_result(7)
        ...     return await future
        >>> asyncio.run(demo())
        7
    """

    __slots__ = ("_done", "_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self._loop = loop
        self._future = future
        self._done = False

    def done(self) -> bool:
        """Whether the result or the error was handed over."""
        return self._done

    def set_result(self, result: Any) -> None:
        """Settle the future with ``result`` on its own loop (ignored once settled)."""
        self._settle(_set_result, result)

    def set_exception(self, exception: BaseException) -> None:
        """Settle the future with ``exception`` on its own loop (ignored once settled)."""
        self._settle(_set_exception, exception)

    def _settle(self, how: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._loop.call_soon_threadsafe(how, self._future, value)
        except RuntimeError:
            pass  # the waiting loop is closed: nobody is left to tell


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the waiter may have been cancelled meanwhile
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exception: BaseException) -> None:
    if not future.done():
        future.set_exception(exception)


class _Pending:
    __slots__ = ("deadline", "function_id", "future", "on_expire", "timeout_ms")

    def __init__(self, future: Settle, function_id: str, deadline: float, timeout_ms: float,
                 on_expire: Expire) -> None:
        self.future = future
        self.function_id = function_id
        self.deadline = deadline
        self.timeout_ms = timeout_ms
        self.on_expire = on_expire


_IDLE_CLOCKS: Final = 16
"""Clocks (distinct timeouts) past which one left without calls is dropped, its timer cancelled, at once."""


class _Clock:
    """The calls sharing one timeout: in insertion order, which is deadline order (one clock), and one timer for
    the oldest."""

    __slots__ = ("calls", "timer")

    def __init__(self) -> None:
        self.calls: dict[str, _Pending] = {}
        self.timer: asyncio.TimerHandle | None = None


class PendingCalls:
    """Futures of calls in flight, keyed by invocation id; every one has a deadline, so none waits forever.

    Why not a ``loop.call_later`` per call: scheduling and cancelling a timer per call cost more than the rest of
    the bookkeeping, and cancelled timers stay in the loop's heap until it purges them. Calls with the same timeout
    end in the order they started, so each distinct timeout keeps one timer, for its oldest call, re-armed for
    the next oldest when that one fires.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: dict[str, _Pending] = {}
        self._clocks: dict[float, _Clock] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, invocation_id: object) -> bool:
        return invocation_id in self._calls

    def add(
        self, invocation_id: str, function_id: str, *, timeout_ms: float, on_expire: Expire
    ) -> asyncio.Future[Any]:
        """A future for call ``invocation_id``; after ``timeout_ms`` it fails with :class:`TimeoutError` and
        ``on_expire(invocation_id)`` runs (so the protocol core forgets the call too; see :data:`Expire`)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self.track(invocation_id, function_id, future, timeout_ms=timeout_ms, on_expire=on_expire)
        return future

    def track(
        self, invocation_id: str, function_id: str, waiter: Settle, *, timeout_ms: float,
        on_expire: Expire
    ) -> bool:
        """Like :meth:`add`, settling ``waiter`` (e.g. a :class:`ThreadWaiter`) instead of a new future; True when
        it scheduled a timer on the loop (a thread holding the loop parked must wake it to see the timer)."""
        old = self._calls.pop(invocation_id, None)
        if old is not None:  # the same id again: the new call replaces the old one (its deadline too)
            self._leave(invocation_id, old.timeout_ms)  # first: it may drop the clock this call would join
        clock = self._clocks.get(timeout_ms)
        if clock is None:
            clock = self._clocks[timeout_ms] = _Clock()
        pending = _Pending(waiter, function_id, self._loop.time() + timeout_ms / 1000.0, timeout_ms, on_expire)
        self._calls[invocation_id] = pending
        clock.calls[invocation_id] = pending
        if clock.timer is None:
            clock.timer = self._loop.call_at(pending.deadline, self._tick, timeout_ms)
            return True
        return False

    def _tick(self, timeout_ms: float) -> None:
        """The timer of timeout ``timeout_ms`` fired: expire its calls whose deadline came, re-arm for the next."""
        clock = self._clocks[timeout_ms]
        clock.timer = None
        # asyncio may run a timer up to one clock resolution early; a call not yet due is re-armed, and its
        # timer then runs on the next turn.
        now = self._loop.time()
        calls = clock.calls
        while calls:
            invocation_id, pending = next(iter(calls.items()))
            if pending.deadline > now:
                if clock.timer is None:  # (a call an on_expire added to this clock armed it already)
                    clock.timer = self._loop.call_at(pending.deadline, self._tick, timeout_ms)
                return
            del calls[invocation_id]
            self._expire(invocation_id, pending)
        if clock.timer is not None:  # armed by a call an on_expire added, then ended: no orphan tick later
            clock.timer.cancel()
            clock.timer = None
        if self._clocks.get(timeout_ms) is clock:  # (an on_expire may have dropped it already)
            del self._clocks[timeout_ms]

    def _expire(self, invocation_id: str, pending: _Pending) -> None:
        self._calls.pop(invocation_id, None)
        why = pending.on_expire(invocation_id)
        if isinstance(why, BaseException):
            if not pending.future.done():
                pending.future.set_exception(why)
            return
        if not pending.future.done():
            message = f"Invocation of '{pending.function_id}' timed out after {pending.timeout_ms}ms"
            if why:
                message += f"; {why}"
            pending.future.set_exception(TimeoutError(message))

    def succeed(self, invocation_id: str, result: Any) -> None:
        """Settle call ``invocation_id`` with ``result`` (no-op if it already ended)."""
        pending = self.discard(invocation_id)
        if pending is not None and not pending.done():
            pending.set_result(result)

    def fail(self, invocation_id: str, error: BaseException) -> None:
        """Fail call ``invocation_id`` with ``error`` (no-op if it already ended)."""
        pending = self.discard(invocation_id)
        if pending is not None and not pending.done():
            pending.set_exception(error)

    def discard(self, invocation_id: str) -> Settle | None:
        """Stop tracking call ``invocation_id``; its future, if it was tracked. Its clock's timer stays armed
        (it re-arms for the next call, or ends when none is left) unless there are many clocks."""
        pending = self._calls.pop(invocation_id, None)
        if pending is None:
            return None
        self._leave(invocation_id, pending.timeout_ms)
        return pending.future

    def _leave(self, invocation_id: str, timeout_ms: float) -> None:
        clock = self._clocks.get(timeout_ms)
        if clock is None:
            return
        calls = clock.calls
        calls.pop(invocation_id, None)
        if not calls and len(self._clocks) > _IDLE_CLOCKS:
            # Callers with a timeout each (a remaining budget) would otherwise leave a timer and a clock per
            # finished call until its deadline; few distinct timeouts keep theirs armed for the next call.
            if clock.timer is not None:
                clock.timer.cancel()
            del self._clocks[timeout_ms]
