"""The client's private event loop in a daemon thread, and the hops onto it from sync code and other loops.

Example:
    >>> bridge = LoopBridge()
    >>> async def add(a: int, b: int) -> int: return a + b
    >>> bridge.run(add(1, 2))
    3
    >>> bridge.stop()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopBridge"]

T = TypeVar("T")

_SYNC_FROM_LOOP = "Cannot call sync SDK methods from the event loop thread. Use async handler methods instead."


class LoopBridge:
    """One event loop running in its own thread; sync callers block on it, async callers await it from any loop.

    Tasks started with :meth:`spawn` are tracked so :meth:`cancel_tasks` can end them on shutdown.
    """

    def __init__(self, name: str = "iii-sdk-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        """Whether the loop thread still runs."""
        return self.thread.is_alive()

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block for its result; ``RuntimeError`` from the loop's own thread
        (it would wait for itself forever)."""
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError(_SYNC_FROM_LOOP)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def post_blocking(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop for a caller about to block until it answers; ``RuntimeError`` from
        the loop's own thread, like :meth:`run`."""
        if self.on_loop_thread():
            raise RuntimeError(_SYNC_FROM_LOOP)
        self.loop.call_soon_threadsafe(fn, *args)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start ``coro`` on the loop from another thread without waiting for it."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the bridge's loop, whichever loop the caller runs on."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, in call order, from any thread (at once on the loop thread)."""
        if self.on_loop_thread():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start a tracked task on the loop (loop thread only)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_tasks(self) -> None:
        """Cancel every tracked task but the caller's, and wait for them to end (on the loop)."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stop the loop and join its thread (``join_timeout`` seconds); the loop is closed once the thread ended."""
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=join_timeout)
        if not self.thread.is_alive():
            self.loop.close()
