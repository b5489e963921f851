"""The futures behind calls waiting for a result, each with its timeout timer (one event loop).

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
from collections.abc import Callable
from typing import Any

__all__ = ["PendingCalls"]


class _Pending:
    __slots__ = ("function_id", "future", "timer")

    def __init__(self, future: asyncio.Future[Any], function_id: str, timer: asyncio.TimerHandle) -> None:
        self.future = future
        self.function_id = function_id
        self.timer = timer


class PendingCalls:
    """Futures of calls in flight, keyed by invocation id; every one has a timer, so none waits forever."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def add(
        self, invocation_id: str, function_id: str, *, timeout_ms: float, on_expire: Callable[[str], None]
    ) -> asyncio.Future[Any]:
        """A future for call ``invocation_id``; after ``timeout_ms`` it fails with :class:`TimeoutError` and
        ``on_expire(invocation_id)`` runs (so the protocol core forgets the call too)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        timer = self._loop.call_later(timeout_ms / 1000.0, self._expire, invocation_id, timeout_ms, on_expire)
        self._calls[invocation_id] = _Pending(future, function_id, timer)
        return future

    def _expire(self, invocation_id: str, timeout_ms: float, on_expire: Callable[[str], None]) -> None:
        pending = self._calls.pop(invocation_id, None)
        on_expire(invocation_id)
        if pending is not None and not pending.future.done():
            message = f"Invocation of '{pending.function_id}' timed out after {timeout_ms}ms"
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

    def discard(self, invocation_id: str) -> asyncio.Future[Any] | None:
        """Stop tracking call ``invocation_id`` (its timer too); its future, if it was tracked."""
        pending = self._calls.pop(invocation_id, None)
        if pending is None:
            return None
        pending.timer.cancel()
        return pending.future
