"""One timer for the time limits of many concurrent store operations that share one limit.

``asyncio.timeout`` arms a timer per operation (about 4.7 µs to enter and leave here, a third of a batched
PostgreSQL update's own CPU in the engine). Operations of one store called without a ``timeout`` of their own
all get the store's limit, so their deadlines come in the order they started: a FIFO of entries and one timer
armed for the oldest live one bound all of them. Leaving pops finished entries off the front; an operation
still running at its deadline has its task cancelled, and :meth:`SharedDeadlines.leave` then reports it expired
so the caller raises its timeout error, with the same cancel accounting as ``asyncio.timeout`` (a cancel from
elsewhere is never turned into a timeout, and the timeout's own cancel is withdrawn with ``uncancel``).

Example:
    >>> import asyncio
    >>> async def demo():
    ...     deadlines = SharedDeadlines(0.01)
    ...     entry = deadlines.enter()
    ...     try:
    ...         await asyncio.sleep(1)
    ...     except asyncio.CancelledError:
    ...         return deadlines.leave(entry, True)
    >>> asyncio.run(demo())
    True
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

__all__ = ["SharedDeadlines"]

_COMPACT_MIN: Final = 64  # entries before a FIFO mostly made of finished ones is rebuilt


class _Entry:
    __slots__ = ("cancelling", "deadline", "done", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.deadline = deadline
        self.task = task
        self.cancelling = cancelling  # the task's pending cancel requests at entry (asyncio.timeout's rule)
        self.done = False
        self.expired = False


class SharedDeadlines:
    """Deadlines ``limit`` seconds after :meth:`enter` for the tasks of one event loop, with one timer."""

    __slots__ = ("_live", "_loop", "_queue", "_timer", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Entry] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._live = 0  # entered and not yet left

    def __len__(self) -> int:
        """Entries still queued (live ones and finished ones not yet popped)."""
        return len(self._queue)

    def enter(self) -> _Entry | None:
        """Start bounding the current task; ``None`` when it cannot be done here (no task, or another event loop
        still has operations in flight): the caller then uses ``asyncio.timeout``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._live:
                return None
            self._loop, self._timer = loop, None  # a new loop (the old one's timer, if any, dies with it)
            self._queue.clear()
        task = asyncio.current_task()
        if task is None:
            return None
        entry = _Entry(loop.time() + self.limit, task, task.cancelling())
        self._queue.append(entry)
        self._live += 1
        if self._timer is None:
            # one timer for everybody: when it fires it moves on to the oldest entry still running
            self._timer = loop.call_at(entry.deadline, self._fire)
        return entry

    def leave(self, entry: _Entry, cancelled: bool) -> bool:
        """Stop bounding ``entry``'s task; ``True`` when its deadline passed and the operation should fail with a
        timeout (``cancelled``: the operation ended in ``CancelledError``)."""
        entry.done = True
        self._live -= 1
        queue = self._queue
        while queue and queue[0].done:
            queue.popleft()
        if len(queue) > _COMPACT_MIN and len(queue) > 4 * self._live:
            # an old operation still running at the front keeps finished ones queued behind it: drop those
            self._queue = deque(e for e in queue if not e.done)
        if not entry.expired:
            return False
        # asyncio.timeout's rule: withdraw our cancel; a timeout only if nobody else asked for one meanwhile
        return entry.task.uncancel() <= entry.cancelling and cancelled

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        queue = self._queue
        while queue and (queue[0].done or queue[0].deadline <= now):
            entry = queue.popleft()
            if not entry.done:
                entry.expired = True
                entry.task.cancel()
        if queue:
            self._timer = loop.call_at(queue[0].deadline, self._fire)
