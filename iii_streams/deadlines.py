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

:func:`finish_within` bounds one wait on a peer (a store's close, a reader task's end): past its limit the work is
cancelled and let go, so a peer that is silent or gone never hangs a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any, Final

__all__ = ["QUIET_DESTROY_MISSING", "SharedDeadlines", "finish_within", "let_go", "let_go_count"]

log = logging.getLogger(__name__)

#: Empty when asyncio's tasks have the private switch that mutes "Task was destroyed but it is pending!" (checked
#: here, the one place it is used; a test fails when an upgrade takes it away). Without it, a let-go task still
#: pending at interpreter exit is reported by asyncio too, as well as by our warnings: noise, nothing lost.
QUIET_DESTROY_MISSING: tuple[str, ...] = () if hasattr(asyncio.Task, "_log_destroy_pending") else (
    "asyncio.Task._log_destroy_pending",)

_COMPACT_MIN: Final = 64  # entries before a FIFO mostly made of finished ones is rebuilt
_LANES_KEPT: Final = 8  # lanes kept per store before those of closed loops and idle ones are dropped


# Work that outlived its bound in finish_within and has not ended yet. The loop keeps only a weak reference to a task:
# one whose library swallowed the cancel and waits on a future nothing else holds would be garbage collected mid-run
# ("Task was destroyed but it is pending!", its finally clauses never run).
_LET_GO: set[asyncio.Future[Any]] = set()


def let_go_count() -> int:
    """How many works :func:`finish_within` let go are still running (those of an event loop closed since are not:
    they never run again, and are dropped here rather than held for the life of the process).

    Example:
        >>> let_go_count()
        0
    """
    for task in [task for task in _LET_GO if task.get_loop().is_closed()]:
        _LET_GO.discard(task)
    return len(_LET_GO)


async def finish_within(work: Awaitable[Any], timeout: float, what: str,
                        logger: logging.Logger | None = None) -> bool:
    """Await ``work`` (a coroutine or a task) for at most ``timeout`` seconds; ``True`` when it ended in time (its
    exception raised, a cancelled task counts as ended), ``False`` when it did not: it is then cancelled and let go,
    and a warning naming ``what`` is logged. A cancel of the caller cancels ``work`` too and lets it go.

    Example:
        >>> import asyncio
        >>> async def demo():
        ...     quick = await finish_within(asyncio.sleep(0), 1.0, "a quick close")
        ...     silent = await finish_within(asyncio.Event().wait(), 0.01, "a silent peer's close")
        ...     return quick, silent
        >>> asyncio.run(demo())
        (True, False)
    """
    # named after what it is: a let-go work still running at the process's exit is named in its warning by that
    task = (asyncio.get_running_loop().create_task(work, name=what) if asyncio.iscoroutine(work)
            else asyncio.ensure_future(work))
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        _let_go(task)  # the caller is cancelled: nothing waits for the work any more
        raise
    if not done:
        _let_go(task)
        (logger or log).warning("%s did not end within %g s; cancelled and let go (%d let go and not ended yet)",
                                what, timeout, let_go_count())
        return False
    if not task.cancelled():
        task.result()
    return True


def let_go(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and keep it referenced until it ends (counted by :func:`let_go_count`), as
    :func:`finish_within` does with work past its bound; a task already done or already let go is left as it is.

    Example:
        >>> import asyncio
        >>> async def demo():
        ...     task = asyncio.get_running_loop().create_task(asyncio.Event().wait())
        ...     let_go(task)
        ...     await asyncio.sleep(0)
        ...     return task.cancelled()
        >>> asyncio.run(demo())
        True
    """
    if task not in _LET_GO:
        _let_go(task)


def _let_go(task: asyncio.Future[Any]) -> None:
    if task.done():
        # it ended as the caller was cancelled, before the caller could look: its failure still counts as seen
        _ended_late(task)
        return
    task.cancel()
    # Held here until it ends, it is destroyed pending only when the interpreter ends first: it was named then (a
    # warning at its let-go, and iii_engine.event_loop's at exit), so asyncio's "Task was destroyed but it is
    # pending!" with its repr, four lines per task after a failed start's one-line error, says nothing new.
    if isinstance(task, asyncio.Task) and not QUIET_DESTROY_MISSING:
        with contextlib.suppress(AttributeError):  # (a Task subclass may refuse it: then asyncio reports it too)
            task._log_destroy_pending = False  # type: ignore[attr-defined]
    _LET_GO.add(task)
    task.add_done_callback(_LET_GO.discard)
    task.add_done_callback(_ended_late)


def _ended_late(task: asyncio.Future[Any]) -> None:
    # retrieved, so a let-go work's failure is not reported as "exception was never retrieved" at garbage collection
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("a work let go (past its bound, or its caller cancelled) failed: %r", exc)


class _Entry:
    __slots__ = ("cancelling", "deadline", "done", "expired", "lane", "task")

    def __init__(self, lane: _Lane, deadline: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.lane = lane  # left and expired only on its own loop's queue
        self.deadline = deadline
        self.task = task
        self.cancelling = cancelling  # the task's pending cancel requests at entry (asyncio.timeout's rule)
        self.done = False
        self.expired = False


class _Lane:
    """One event loop's FIFO and timer: touched only from that loop (its tasks enter and leave, its timer fires)."""

    __slots__ = ("live", "loop", "queue", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[_Entry] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.live = 0  # entered and not yet left

    def fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        queue = self.queue
        while queue and (queue[0].done or queue[0].deadline <= now):
            entry = queue.popleft()
            if not entry.done:
                entry.expired = True
                entry.task.cancel()
        if queue:
            self.timer = self.loop.call_at(queue[0].deadline, self.fire)


class SharedDeadlines:
    """Deadlines ``limit`` seconds after :meth:`enter`, with one timer per event loop the tasks run on."""

    __slots__ = ("_lane", "_lanes", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._lane: _Lane | None = None  # the loop of the latest enter
        self._lanes: dict[asyncio.AbstractEventLoop, _Lane] = {}

    def __len__(self) -> int:
        """Entries still queued on the current loop's lane (live ones and finished ones not yet popped)."""
        lane = self._lane
        return 0 if lane is None else len(lane.queue)

    def enter(self) -> _Entry | None:
        """Start bounding the current task; ``None`` when there is no task (the caller then uses
        ``asyncio.timeout``).

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     deadlines = SharedDeadlines(5.0)
            ...     entry = deadlines.enter()
            ...     return len(deadlines), deadlines.leave(entry, False), len(deadlines)
            >>> asyncio.run(demo())
            (1, False, 0)
        """
        loop = asyncio.get_running_loop()
        lane = self._lane
        if lane is None or lane.loop is not loop:
            lane = self._lane = self._lane_of(loop)
        task = asyncio.current_task()
        if task is None:
            return None
        entry = _Entry(lane, loop.time() + self.limit, task, task.cancelling())
        lane.queue.append(entry)
        lane.live += 1
        if lane.timer is None:
            # one timer for everybody: when it fires it moves on to the oldest entry still running
            lane.timer = loop.call_at(entry.deadline, lane.fire)
        return entry

    def _lane_of(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        """``loop``'s lane. Loops taking turns (two threads' loops, a sync wrapper's) keep theirs, and its one
        timer, instead of arming a new one per turn; a lane left behind lives on through its entries and its timer,
        which stays on its own loop and touches only them, and is dropped once its loop is closed or it is idle."""
        lanes = self._lanes
        lane = lanes.get(loop)
        if lane is None:
            if len(lanes) >= _LANES_KEPT:
                for other_loop, other in list(lanes.items()):
                    if other_loop.is_closed() or not other.queue:
                        lanes.pop(other_loop, None)
            lane = lanes[loop] = _Lane(loop)
        return lane

    def leave(self, entry: _Entry, cancelled: bool) -> bool:
        """Stop bounding ``entry``'s task; ``True`` when its deadline passed and the operation should fail with a
        timeout (``cancelled``: the operation ended in ``CancelledError``).

        Example:
            >>> import asyncio
            >>> async def demo():
            ...     deadlines = SharedDeadlines(0.01)
            ...     entry = deadlines.enter()
            ...     try:
            ...         await asyncio.sleep(1)  # outlives the deadline: cancelled by the shared timer
            ...     except asyncio.CancelledError:
            ...         return deadlines.leave(entry, True)
            >>> asyncio.run(demo())
            True
        """
        entry.done = True
        lane = entry.lane
        lane.live -= 1
        queue = lane.queue
        while queue and queue[0].done:
            queue.popleft()
        if len(queue) > _COMPACT_MIN and len(queue) > 4 * lane.live:
            # an old operation still running at the front keeps finished ones queued behind it: drop those
            lane.queue = deque(e for e in queue if not e.done)
        if not entry.expired:
            return False
        # asyncio.timeout's rule: withdraw our cancel; a timeout only if nobody else asked for one meanwhile
        return entry.task.uncancel() <= entry.cancelling and cancelled

    def _fire(self) -> None:
        """Run the current loop's timer now, as if its deadline had come (tests force a deadline with it)."""
        if self._lane is not None:
            self._lane.fire()
