"""One wake-up primitive for the hot loops of channels and sinks.

A :class:`Signal` is what the channel ends, the relay and the sinks used to hand-roll with a bare future: one
task waits until another says "something changed", then re-checks its own condition. It keeps no memory (a
``set()`` with nobody waiting is a no-op, exactly like a condition variable) and allows one waiter at a time, so
it costs one future per wait and nothing else; a second concurrent waiter is a bug and raises.

Example:
    >>> import asyncio
    >>> async def demo() -> str:
    ...     signal, items = Signal(), []
    ...     async def consume() -> str:
    ...         while not items:
    ...             await signal.wait()
    ...         return items.pop()
    ...     task = asyncio.ensure_future(consume())
    ...     await asyncio.sleep(0)
    ...     items.append("ready"); signal.set()
    ...     return await task
    >>> asyncio.run(demo())
    'ready'
"""

from __future__ import annotations

import asyncio


class Signal:
    """Wake the one task waiting in :meth:`wait`; see the module docstring."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        """Whether a task is waiting now."""
        return self._waiter is not None

    def set(self) -> None:
        """Wake the waiter, if any (no-op otherwise)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """Make the waiter's ``wait()`` raise ``exc`` (no-op without a waiter)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def wait(self) -> None:
        """Wait for the next :meth:`set`.

        Raises:
            RuntimeError: another task is already waiting on this signal.
        """
        if self._waiter is not None:
            raise RuntimeError("Signal allows one waiter at a time; another task is already waiting")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


class Broadcast:
    """Wake every task waiting in :meth:`wait` (a :class:`Signal` for several waiters: each re-checks its own
    condition). Like :class:`Signal`, it keeps no memory; a waiter cancelled leaves the others waiting.

    Example:
        >>> import asyncio
        >>> async def demo() -> list[str]:
        ...     broadcast, ready = Broadcast(), []
        ...     async def consume(name: str) -> str:
        ...         while not ready:
        ...             await broadcast.wait()
        ...         return name
        ...     tasks = [asyncio.ensure_future(consume(name)) for name in ("a", "b")]
        ...     await asyncio.sleep(0)
        ...     ready.append(True); broadcast.set()
        ...     return list(await asyncio.gather(*tasks))
        >>> asyncio.run(demo())
        ['a', 'b']
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        # One future per waiting task (as many as there are tasks waiting, no more): a shared one, cancelled with
        # one waiter, would fail them all.
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        """Wake every waiter (no-op without one)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Wait for the next :meth:`set`."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)


__all__ = ["Broadcast", "Signal"]
