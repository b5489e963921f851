"""The threads sync function handlers run on: a bounded pool that does not count threads blocked in a sync SDK call.

A sync handler that calls ``iii.trigger(...)`` blocks its thread until the answer comes. When the function it calls
is served by sync handlers of the same process, that answer needs a free thread too. On the event loop's default
executor (``min(32, cpu + 4)`` threads: 6 on two cores) six such calls at once took every thread, the inner
invocations queued behind them, and every call failed after its timeout: a deadlock that only timeouts broke.

Here, as in a fork-join pool's managed blocking, a thread inside :func:`blocked` (a sync ``trigger`` waiting for its
answer) does not count against the bound, so a queued handler gets a thread while it waits. Otherwise it is the
standard :class:`~concurrent.futures.ThreadPoolExecutor` (same bound, same speed); threads started for a burst of
blocked handlers stay, idle, like the executor's own. Blocked threads free slots only up to ``max_threads`` threads in
all (:data:`DEFAULT_MAX_THREADS`): a handler that triggers itself, directly or around a cycle, started a thread per
level without one (about 4,500 in 4 s, ~30,000 before the default 30 s timeout, all kept idle afterwards); past it a
blocked thread keeps its slot, as on the default executor, and the caller's timeout ends the cycle. When every thread
up to that ceiling is busy and runs wait in the queue, one warning says so, naming the ceiling, the runs waiting and
the likely cause (at most every :data:`CEILING_WARNING_INTERVAL_S`): before, nested sync chains past the ceiling only
timed out, with an error that did not name it. Whether a freed
slot needs a new thread is decided by an exact count of the runs going on, not by the executor's idle count (after a
backlog that said most threads were idle while all were busy, and nested calls waited for their timeout). On a Python
whose executor lacks the internals this relies on (:data:`BLOCKING_MISSING` not empty) :func:`blocked` changes
nothing.

A pool made with ``on_exit`` calls it once when the interpreter starts its exit (the main thread returned, or a
Ctrl-C's ``KeyboardInterrupt`` left it): from then on the interpreter refuses new runs on every executor and waits,
with no bound, for the runs going on. The hook is ``threading._register_atexit`` (the one concurrent.futures uses; it
runs before the interpreter joins the executors' threads); on a Python without it (:data:`EXIT_HOOK_MISSING` not
empty), the first run the pool refuses while not shut down calls ``on_exit`` instead (the interpreter's refusal: a
new run coming in, a cron tick say, is what shows it). What ``on_exit`` returns, if anything, is a wait (for the
work it started: a client's shutdown); the hook calls every pool's ``on_exit`` first, then their waits, with
:data:`EXIT_WAIT_S` in all, so that work runs at once in every pool and one stuck pool does not hold the exit.

Example:
    >>> pool = HandlerThreads(limit=2)
    >>> pool.submit(sum, [1, 2]).result(5)
    3
    >>> pool.shutdown()
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _futures_thread
from contextlib import contextmanager
from typing import Any, Final, TypeVar

__all__ = ["BLOCKING_MISSING", "CEILING_WARNING_INTERVAL_S", "DEFAULT_MAX_THREADS", "EXIT_HOOK_MISSING", "EXIT_WAIT_S",
           "ExitWait", "HandlerThreads", "at_exit_start", "blocked", "default_limit", "exit_refusal"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_local = threading.local()  # .pool: the HandlerThreads whose thread this is


def default_limit() -> int:
    """The default executor's bound, ``min(32, cpu + 4)``: sync handlers get as many threads as they had there."""
    return min(32, (os.cpu_count() or 1) + 4)


def _probe() -> tuple[str, ...]:
    """The :class:`ThreadPoolExecutor` internals :func:`blocked` uses that this Python lacks."""
    probe = ThreadPoolExecutor(max_workers=1)
    try:
        names = ("_max_workers", "_shutdown_lock", "_work_queue", "_adjust_thread_count", "_shutdown", "_threads")
        return tuple(name for name in names if not hasattr(probe, name))
    finally:
        probe.shutdown(wait=False)


BLOCKING_MISSING: tuple[str, ...] = _probe()
"""What :func:`_probe` found missing (empty: :func:`blocked` frees a slot)."""


CEILING_WARNING_INTERVAL_S: Final = 30.0
"""Seconds between two of a pool's warnings that every thread up to its ceiling is busy while runs wait."""


DEFAULT_MAX_THREADS: Final = 256
"""The most threads a :class:`HandlerThreads` starts, blocked ones included (nested sync calls deeper than this wait
for their timeout, as they all did on the default executor)."""


def _probe_exit_hook() -> tuple[str, ...]:
    """The interpreter-exit hook :class:`HandlerThreads` uses for ``on_exit``, if this Python lacks it."""
    return () if callable(getattr(threading, "_register_atexit", None)) else ("threading._register_atexit",)


ExitWait = Callable[[float], None]
"""What an ``on_exit`` may return: wait (at most the seconds given) for the work it started."""

EXIT_WAIT_S: Final = 5.0
"""Seconds the interpreter's exit gives, in all, to the waits the pools' ``on_exit`` returned (the clients'
shutdowns, started all at once); past it the exit goes on without them."""

EXIT_HOOK_MISSING: tuple[str, ...] = _probe_exit_hook()
"""What :func:`_probe_exit_hook` found missing (empty: ``on_exit`` runs as the interpreter's exit starts; otherwise
at the first run refused after it)."""


def at_exit_start(callback: Callable[[], None]) -> bool:
    """Call ``callback`` once the interpreter's exit starts, before it joins the threads that are not daemons (and
    the executors' threads): ``threading._register_atexit``, the hook concurrent.futures uses. ``True`` when it is
    registered; ``False`` on a Python without that hook (:data:`EXIT_HOOK_MISSING`) or once the exit has started.

    Example:
        >>> at_exit_start(lambda: None) == (not EXIT_HOOK_MISSING)
        True
    """
    if EXIT_HOOK_MISSING:
        return False
    try:
        threading._register_atexit(callback)  # type: ignore[attr-defined]
    except RuntimeError:  # the exit already started (a caller on another thread then)
        return False
    return True


# The pools with an on_exit, told as the interpreter's exit starts (weakly: a client dropped unclosed is not kept).
_WATCHED: weakref.WeakSet[HandlerThreads] = weakref.WeakSet()
_watched_lock = threading.Lock()


def _new_watched_lock() -> None:
    """In a forked child: a lock of its own. The child inherits the pools and the hook (it runs as the child ends, a
    multiprocessing one's too), and a copy of the lock held at the fork by another thread (one making or shutting
    down a client), a thread the child does not have, held the child's exit for ever."""
    global _watched_lock
    _watched_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # (not on Windows: no fork)
    os.register_at_fork(after_in_child=_new_watched_lock)
_hooked = False


def _watch(pool: HandlerThreads) -> None:
    """Tell ``pool`` (its ``on_exit``) when the interpreter's exit starts; the hook is registered by the first pool.
    Registered after concurrent.futures' own (imported above), it runs before that one joins the pools' threads."""
    global _hooked
    with _watched_lock:
        _WATCHED.add(pool)
        if not _hooked:
            # False once already exiting (a pool made by a thread then): the refusal tells it instead
            _hooked = at_exit_start(_interpreter_exiting)


def _interpreter_exiting() -> None:
    """The interpreter's exit has started: tell every watched pool, then wait for what they started,
    :data:`EXIT_WAIT_S` in all. Told one by one and each waited for in turn, ten clients of a stalled engine held the
    exit 20 s (2 s each for the close), and a client whose loop a handler blocked held it for as long as that lasted."""
    with _watched_lock:
        pools = list(_WATCHED)
    waits = [wait for pool in pools if (wait := pool.exiting()) is not None]
    deadline = time.monotonic() + EXIT_WAIT_S
    for wait in waits:
        try:
            wait(max(0.0, deadline - time.monotonic()))
        except Exception:
            log.exception("A wait at the interpreter's exit failed")


def exit_refusal(exc: RuntimeError) -> bool:
    """Whether ``exc``, out of an executor's ``submit``, is the interpreter's refusal (its exit has started) rather
    than another failure: a thread that could not start (``can't start new thread``, a process at its thread limit)
    passed for the exit, and the pool's ``on_exit`` shut a whole worker down for good.

    Example:
        >>> exit_refusal(RuntimeError("cannot schedule new futures after interpreter shutdown"))
        True
        >>> exit_refusal(RuntimeError("can't start new thread"))
        False
    """
    # (the flag concurrent.futures sets as the exit starts, and its message should the flag move)
    return bool(getattr(_futures_thread, "_shutdown", False)) or "interpreter shutdown" in str(exc)


def _mark(pool: HandlerThreads) -> None:
    _local.pool = pool


class HandlerThreads(ThreadPoolExecutor):
    """Threads for sync handlers; see the module docstring."""

    def __init__(self, limit: int | None = None, name: str = "iii-handler",
                 max_threads: int = DEFAULT_MAX_THREADS,
                 on_exit: Callable[[], ExitWait | None] | None = None) -> None:
        limit = default_limit() if limit is None else limit
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if max_threads < limit:
            raise ValueError(f"max_threads must be >= limit ({limit}), got {max_threads}")
        self._ceiling = max_threads
        super().__init__(max_workers=limit, thread_name_prefix=name, initializer=_mark, initargs=(self,))
        self._on_exit = on_exit
        # Exact counts of our own (the executor's idle count is not one: see _start_thread). Runs going on, and runs
        # finished so far: the most idle marks the executor can hold.
        self._counts = threading.Lock()
        self._running = 0
        self._finished = 0
        self._waiting = 0  # threads inside _blocked (a sync SDK call): only these can hold the ceiling for good
        self._ceiling_told = -CEILING_WARNING_INTERVAL_S  # when the ceiling's warning was last logged (monotonic)
        self._closing = False  # shutdown() was called: a refusal after it is ours, not the interpreter's
        self._told = threading.Lock()  # held once on_exit has been called: it is called once
        if on_exit is not None:
            _watch(self)

    def exiting(self) -> ExitWait | None:
        """The interpreter's exit has started: call ``on_exit`` (once; not after :meth:`shutdown`) and return the
        wait it returned, if any. Its exception is logged: the other pools are told still.

        Example:
            >>> told = []
            >>> pool = HandlerThreads(on_exit=lambda: told.append(1))
            >>> pool.exiting(); pool.exiting(); told
            [1]
            >>> pool.shutdown()
        """
        if self._on_exit is None or self._closing or not self._told.acquire(blocking=False):
            return None
        try:
            return self._on_exit()
        except Exception:
            log.exception("Handler threads %r: their on_exit failed as the interpreter's exit started", self)
            return None

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        refused: list[RuntimeError] = []

        def run() -> T:
            # A thread that cannot start ("can't start new thread") fails the submit after the executor queued the
            # work: its caller was told it was refused, so the next free thread must not run it (a retry ran twice).
            if refused:
                raise refused[0]
            with self._counts:
                self._running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._counts:
                    self._running -= 1
                    self._finished += 1

        try:
            future = super().submit(run)
        except RuntimeError as exc:
            refused.append(exc)
            # The interpreter's exit refused it (without the hook, the first sign of that exit), not our shutdown
            if not self._closing and exit_refusal(exc):
                self.exiting()
            raise
        pool: Any = self
        # A slot freed by a blocked thread, with no thread for it yet: the run a blocked thread waits for is often
        # submitted after it blocked (it came back through the engine), and the executor's own check misses it.
        if len(pool._threads) < pool._max_workers and not BLOCKING_MISSING:
            with pool._shutdown_lock:
                if not pool._shutdown:
                    self._start_thread(pool)
        if not BLOCKING_MISSING:
            self._tell_ceiling(pool)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closing = True
        with _watched_lock:
            _WATCHED.discard(self)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)

    @property
    def closing(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closing

    @property
    def threads(self) -> int:
        """Threads started so far."""
        return len(getattr(self, "_threads", ()))

    def _start_thread(self, pool: Any) -> None:
        """A thread for the queue now, unless one is idle (with ``_shutdown_lock`` held, below ``_max_workers``).

        The executor counts idle threads with a semaphore released once per finished run and taken once per
        submit: after a backlog (200 quick runs queued on 4 threads) it said ~190 were idle while every thread was
        busy, so ``_adjust_thread_count`` started none and a nested sync call waited for its timeout. Our own count
        decides instead; each ``_adjust_thread_count`` takes one stale mark until the next starts a thread. The marks
        are at most the runs finished (plus one per thread for a release under way): a Python whose executor counts
        otherwise ends the loop there, as before this fix."""
        with self._counts:
            stale = self._finished + len(pool._threads) + 1
        while stale > 0 and len(pool._threads) < pool._max_workers:
            with self._counts:
                if len(pool._threads) > self._running:  # a thread is idle (or about to be): it takes the queue
                    return
            started = len(pool._threads)
            pool._adjust_thread_count()
            if len(pool._threads) > started:
                with self._counts:  # the executor found no idle mark: the count starts again from here
                    self._finished = 0
                return
            stale -= 1

    @contextmanager
    def _blocked(self) -> Iterator[None]:
        pool: Any = self  # (the executor's internals are untyped)
        with pool._shutdown_lock:  # (what submit holds while it counts threads)
            freed = pool._max_workers < self._ceiling
            if freed:
                pool._max_workers += 1
                # A queued handler may be what this thread waits for: a thread now. (Shut down, the queue holds the
                # workers' end marker: a thread started for it would only end again.)
                if not pool._shutdown and not pool._work_queue.empty():
                    self._start_thread(pool)
        with self._counts:
            self._waiting += 1
        if not freed:
            self._tell_ceiling(pool)
        try:
            yield
        finally:
            with self._counts:
                self._waiting -= 1
            if freed:
                with pool._shutdown_lock:
                    pool._max_workers -= 1

    def _tell_ceiling(self, pool: Any) -> None:
        """Warn (at most every :data:`CEILING_WARNING_INTERVAL_S`) when every thread up to the ceiling is busy and
        runs wait in the queue while a thread waits in a sync SDK call: nothing said so, and nested sync chains past
        the ceiling only timed out. Reads the counts, changes none."""
        if pool._max_workers < self._ceiling or pool._shutdown:
            return
        queued = pool._work_queue.qsize()
        if not queued:
            return
        with self._counts:
            threads = len(pool._threads)
            if threads < pool._max_workers or self._running < threads:  # a thread is idle, or one may start
                return
            if not self._waiting:  # busy, none waiting on a call: plain load (limit == max_threads), it drains
                return
            now = time.monotonic()
            if now - self._ceiling_told < CEILING_WARNING_INTERVAL_S:
                return
            self._ceiling_told = now
        log.warning("Handler threads %r: all %d sync handler threads (the ceiling, max_threads=%d) are busy and %d "
                    "run(s) wait in the queue; sync handlers that call trigger() synchronously hold their thread; "
                    "nested chains deeper than the ceiling cannot finish: use async handlers or trigger_async (this "
                    "warning at most every %.0f s)", self._thread_name_prefix, threads, self._ceiling, queued,
                    CEILING_WARNING_INTERVAL_S)


@contextmanager
def blocked() -> Iterator[None]:
    """Around a sync SDK wait (a ``trigger`` waiting for its answer): on a handler thread, that thread does not count
    against its pool's bound meanwhile; elsewhere a no-op.

    Example:
        >>> with blocked():
        ...     pass
    """
    pool: HandlerThreads | None = getattr(_local, "pool", None)
    if pool is None or BLOCKING_MISSING:
        yield
        return
    with pool._blocked():
        yield
