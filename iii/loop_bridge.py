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
import asyncio.base_events
import concurrent.futures
import contextlib
import inspect
import logging
import selectors
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from .errors import IIIError, ShuttingDownError
from .pending_calls import Settle

__all__ = ["PARK_MISSING", "LoopBridge", "LoopStoppedError"]

T = TypeVar("T")
log = logging.getLogger(__name__)

CANCEL_WAIT_S: Final = 3.0
"""Seconds :meth:`LoopBridge.cancel_tasks` waits for the cancelled tasks (handlers in flight at shutdown) to end."""

_LAST_CANCEL_WAIT_S: Final = 0.5
"""Seconds the loop's end gives the tasks still left after :data:`CANCEL_WAIT_S` once cancelled again (within the 5 s
a :meth:`LoopBridge.stop` waits for the thread)."""


_LATE_TURN_S: Final = 0.05
"""Seconds a task cancelled only once the loop's end ran out of time is given to end (:data:`_LATE_TURNS` times at
most): a cancelled task that does not refuse its cancel ends in a loop turn."""

_LATE_TURNS: Final = 3


def _probe_park() -> tuple[str, ...]:
    """The asyncio internals :meth:`LoopBridge.park` relies on that this Python lacks: the loop's queue of callbacks
    due (``_ready``, read to let them go first) and the one selector wait per turn that the parking lock wraps."""
    base = asyncio.base_events.BaseEventLoop
    try:
        init, run_once = inspect.getsource(base.__init__), inspect.getsource(base._run_once)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):  # pragma: no cover - sources not shipped, or the method moved
        return ("asyncio.base_events sources",)
    missing = []
    if "self._ready = collections.deque()" not in init:
        missing.append("BaseEventLoop._ready")
    if "self._selector.select(timeout)" not in run_once:
        missing.append("BaseEventLoop._run_once: self._selector.select(timeout)")
    return tuple(missing)


PARK_MISSING: tuple[str, ...] = _probe_park()
"""What :func:`_probe_park` found missing (empty: park() works); otherwise every loop is made as the policy makes it
and park() always declines (the hop onto the loop)."""

# BaseSelectorEventLoop._read_from_self as _BridgeLoop's override was written against (the same in 3.11 to 3.13).
_READ_FROM_SELF: Final = """    def _read_from_self(self):
        while True:
            try:
                data = self._ssock.recv(4096)
                if not data:
                    break
                self._process_self_data(data)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
"""


def _probe_read_from_self() -> bool:
    """Whether this Python's loop drains its wake-up socket as :data:`_READ_FROM_SELF` does (then
    :class:`_BridgeLoop` may read it once instead)."""
    try:
        source = inspect.getsource(asyncio.SelectorEventLoop._read_from_self)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):  # pragma: no cover - sources not shipped, or the method moved
        return False
    return source == _READ_FROM_SELF


_READ_ONCE: Final = _probe_read_from_self()

_SYNC_FROM_LOOP = "Cannot call sync SDK methods from the event loop thread. Use async handler methods instead."


class LoopStoppedError(ShuttingDownError):
    """The client's event loop thread ended while a caller was waiting on it: the answer can never come.

    A :class:`ShuttingDownError`, so code that handles a shutdown handles this too; the message says what
    happened instead of the generic shutdown text.

    Example:
        >>> str(LoopStoppedError("iii-sdk-loop"))
        "the SDK's event loop thread 'iii-sdk-loop' stopped while this call was waiting for it"
    """

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        IIIError.__init__(
            self, f"the SDK's event loop thread {thread_name!r} stopped while this call was waiting for it"
        )

    def __reduce__(self) -> tuple[type[LoopStoppedError], tuple[str]]:
        # args hold the message; rebuild from the thread name (pickling, e.g. across processes).
        return (type(self), (self.thread_name,))


class LoopBridge:
    """One event loop running in its own thread; sync callers block on it, async callers await it from any loop.

    Tasks started with :meth:`spawn` are tracked so :meth:`cancel_tasks` can end them on shutdown. Callers
    waiting from other threads or loops are held (:meth:`hold`) and failed with :class:`LoopStoppedError` the
    moment the loop thread ends, however it ends (stopped, or killed by an exception escaping the loop):
    otherwise a result the dead loop can never deliver would be awaited forever.
    """

    def __init__(self, name: str = "iii-sdk-loop") -> None:
        self._selector: _ParkingSelector | None = None
        self.loop = asyncio.new_event_loop()  # whatever the policy makes (uvloop if the user chose it)
        if _plain_standard_loop(self.loop):
            # The standard loop as asyncio makes it: the same, on a selector that lets another thread hold it parked
            # (park()). With any other loop, or one a policy of the user's configured, park() declines.
            self.loop.close()
            self._selector = _ParkingSelector()
            self.loop = (_BridgeLoop if _READ_ONCE else asyncio.SelectorEventLoop)(self._selector)
        self._tasks: dict[Coroutine[Any, Any, Any], asyncio.Task[Any]] = {}  # by the coroutine each one runs
        # Callers waiting from elsewhere, each with the coroutine it handed to the loop (None: a callback's work)
        self._held: dict[Settle, Coroutine[Any, Any, Any] | None] = {}
        self._held_lock = threading.Lock()
        # ids of the coroutines run() / run_async() hand over, until their waiter is held: the loop may start one (and
        # a stop's sweep find its task) before that
        self._handing: set[int] = set()
        self._ended = False
        self._stop_lock = threading.Lock()  # stop() from several threads at once: one stops, the others wait for it
        # Done once the loop thread has left its loop: another loop awaits it (stop_async) instead of blocking on a
        # join. Running from the start, so a waiter that gives up cannot cancel it for the others.
        self._thread_ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread_ended.set_running_or_notify_cancel()
        self._close_at_end = False  # set by stop_after(): nobody joins the thread, so it closes its loop itself
        # The tasks whose end stop_after() waits for (one shutdown's callers: a handler's, another loop's hop), so
        # the loop never stops with one of them still pending ("Task was destroyed but it is pending!").
        self._stop_waits: set[asyncio.Future[Any]] = set()
        # Tasks that went on after cancel_tasks() cancelled them and waited for them: the loop's end does not wait
        # for them again.
        self._abandoned: set[asyncio.Task[Any]] = set()
        # Set by this bridge's own stops (a shutdown): only then does the loop's end cancel what is left on it. A loop
        # stopped or killed otherwise leaves its tasks as they are, and its waiting callers get LoopStoppedError.
        self._stopping = False
        self.thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self.thread.start()

    def _run_loop(self) -> None:
        try:
            self.loop.run_forever()
            if self._stopping:
                self._end_leftovers()
        finally:
            self._fail_held()
            if self._close_at_end:
                self.loop.close()
            self._thread_ended.set_result(None)

    def _fail_held(self) -> None:
        """On the loop thread, as it ends: fail every held waiter (none can be settled by this loop any more)."""
        with self._held_lock:
            self._ended = True
            held, self._held = self._held, {}
        for waiter in held:
            _fail(waiter, LoopStoppedError(self.thread.name))

    def _end_leftovers(self) -> None:
        """On the loop thread, once the loop has stopped: cancel the tasks still on it and run it until they have
        ended (:data:`CANCEL_WAIT_S` at most), as ``asyncio.run`` does before it closes its loop. A task nobody
        tracks (a channel writer's pump on this loop, a write pending there) stayed pending, and asyncio logged
        "Task was destroyed but it is pending!" once the closed loop's tasks were collected. The tasks of callers
        waiting from elsewhere (:meth:`run`, :meth:`run_async`) are ended too: those callers get
        :class:`LoopStoppedError`, not the cancel (:meth:`_stopped_under`)."""
        loop = self.loop
        waits: set[asyncio.Future[Any]] = set()  # the sweep's own

        def left() -> set[asyncio.Task[Any]]:
            return {task for task in asyncio.all_tasks(loop) if task not in waits and task not in self._abandoned}

        def wait(tasks: set[asyncio.Task[Any]], seconds: float) -> None:
            waited = loop.create_task(asyncio.wait(tasks, timeout=seconds))
            waits.add(waited)
            while not waited.done():
                # A stop() or stop_async() from another thread lands here too (the loop stopped once already; the
                # second stop is theirs): it ends run_until_complete early, not the sweep.
                with contextlib.suppress(RuntimeError):
                    loop.run_until_complete(waited)

        tasks = left()
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        cancelled = set(tasks)

        def cancel_handed_over(tasks: set[asyncio.Task[Any]]) -> None:
            # Runs handed over from elsewhere meanwhile (a sync call racing the shutdown) are cancelled at once (their
            # callers get LoopStoppedError): waited for uncancelled, they held the stop up to its whole wait.
            with self._held_lock:
                awaited = {id(coro) for coro in self._held.values() if coro is not None} | self._handing
            for task in tasks - cancelled:
                if id(task.get_coro()) in awaited:
                    task.cancel()
                    cancelled.add(task)

        # A cancelled task's clean-up may start tasks of its own (a channel writer's abort, bounded): they are given
        # what is left of the time, then cancelled too.
        deadline = loop.time() + CANCEL_WAIT_S
        while tasks and loop.time() < deadline:
            wait(tasks, deadline - loop.time())
            tasks = left()
            cancel_handed_over(tasks)
        # Cancelled again, and whatever starts meanwhile as it appears, with a short turn to end even once the time
        # is out (a run handed over during this last wait was left pending on the closed loop: "Task was destroyed
        # but it is pending!"); a few such turns at most, so a thread that keeps handing runs over cannot hold the end.
        deadline = loop.time() + _LAST_CANCEL_WAIT_S
        recancelled: set[asyncio.Task[Any]] = set()
        late_turns = 0
        while tasks:
            fresh = tasks - recancelled
            if loop.time() >= deadline:
                if not fresh or late_turns == _LATE_TURNS:
                    break
                late_turns += 1
            for task in fresh:
                task.cancel()
            recancelled |= fresh
            wait(tasks, max(deadline - loop.time(), _LATE_TURN_S))
            tasks = left()
        stuck = [task for task in tasks if not task.done()]
        if stuck:
            log.warning("%d task(s) left on the SDK client's loop did not end within %g s of their cancel as it "
                        "stopped: %s", len(stuck), CANCEL_WAIT_S + _LAST_CANCEL_WAIT_S,
                        ", ".join(sorted(repr(task.get_coro()) for task in stuck))[:1000])

    def hold(self, waiter: Settle, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        """Fail ``waiter`` with :class:`LoopStoppedError` if the loop thread ends before :meth:`release`
        (at once when it already has). Call before handing the loop the work that settles ``waiter`` (``coro``,
        when it is a coroutine run there as a task of its own: not cancelled as the loop ends)."""
        with self._held_lock:
            if not self._ended:
                self._held[waiter] = coro
                return
        _fail(waiter, LoopStoppedError(self.thread.name))

    def release(self, waiter: Settle) -> None:
        """Stop holding ``waiter`` (it was settled or its caller stopped waiting)."""
        with self._held_lock:
            self._held.pop(waiter, None)

    def park(self) -> bool:
        """From another thread: hold the loop where it waits for I/O, with no callback due, if it is there now;
        True when held, and then the caller runs as if on the loop thread until :meth:`unpark` (briefly, never
        blocking or awaiting, touching no other loop). False (the caller hops onto the loop instead) when the
        loop is busy or has work queued, when it is not the standard loop, in debug mode, or not running.

        A sync call started this way writes its frame from the caller's thread: no wake-up of the loop thread,
        no turn of the loop, no GIL hand-off there and back, just to write one frame.
        """
        selector = self._selector
        if selector is None or threading.get_ident() == threading.main_thread().ident:
            # The main thread runs Python's signal handlers, whose exceptions (Ctrl-C's KeyboardInterrupt, a SIGTERM
            # handler's SystemExit) land at any call: after the lock is taken (the loop then never runs again), or
            # after a partial socket send before the transport kept the rest (the stream then carries half a frame).
            # No other thread gets them, and on the loop thread the hop never had them either.
            return False
        if not selector.parked.acquire(blocking=False):
            return False
        loop = self.loop
        # _ready: callbacks posted to the loop and not run yet (a registration, a frame): they go first.
        if loop._ready or loop.get_debug() or not self.thread.is_alive():  # type: ignore[attr-defined]
            selector.parked.release()
            return False
        return True

    def unpark(self) -> None:
        """Let the loop go on after a successful :meth:`park`, woken if the caller left it work (e.g. a failed
        write's transport scheduled its connection_lost): it would otherwise sleep on, not knowing."""
        assert self._selector is not None
        self._selector.parked.release()
        if self.loop._ready:  # type: ignore[attr-defined]
            self.wake()

    def wake(self) -> None:
        """Make the loop run a turn (it then sees timers and callbacks added while it was parked)."""
        self.loop.call_soon_threadsafe(_nothing)

    def post_parked(self, callback: Callable[..., object] | None = None, *args: Any) -> None:
        """From the thread holding the loop parked: run ``callback(*args)`` in the loop's next turn (none: just a
        turn, so the loop sees a timer added meanwhile). No wake-up of its own: :meth:`unpark` wakes the loop once
        for everything left queued, where ``call_soon_threadsafe`` would write to its wake-up pipe each time."""
        self.loop.call_soon(callback or _nothing, *args)

    @property
    def alive(self) -> bool:
        """Whether the loop thread still runs."""
        return self.thread.is_alive()

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block for its result; ``RuntimeError`` from the loop's own thread
        (it would wait for itself forever), :class:`LoopStoppedError` once the loop stopped."""
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError(_SYNC_FROM_LOOP)
        future = self._hand_over(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._stopped_under(future):
                raise LoopStoppedError(self.thread.name) from None
            raise
        finally:
            self.release(future)
            self._close_unstarted(coro, future)
            del future  # (the cycle run_async breaks: this frame, in the error's traceback, kept the future)

    def _hand_over(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` as a task on the loop for a caller waiting from elsewhere, its waiter held (:meth:`hold`);
        :class:`LoopStoppedError` when the loop is closed. Known as handed over from before the loop can start it."""
        key = id(coro)
        with self._held_lock:
            self._handing.add(key)
        try:
            try:
                future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            except RuntimeError:
                # Closed: a call racing the shutdown that closed the loop after the caller's own check. What a
                # stopped loop says (a ShuttingDownError), not asyncio's "Event loop is closed"; the coroutine will
                # never run, so it is closed (no "never awaited" warning).
                coro.close()
                if not self.loop.is_closed():
                    raise
                raise LoopStoppedError(self.thread.name) from None
            self.hold(future, coro)
        finally:
            with self._held_lock:
                self._handing.discard(key)
        return future

    def _stopped_under(self, future: concurrent.futures.Future[Any]) -> bool:
        """Whether ``future``'s work was cancelled by this bridge's stop (its sweep of the tasks left on the loop)
        rather than by its caller: a caller waiting from elsewhere is told the loop stopped, as it would have been
        had the loop never run its work."""
        return future.cancelled() and self._stopping

    def _close_unstarted(self, coro: Coroutine[Any, Any, Any], future: concurrent.futures.Future[Any]) -> None:
        """Close ``coro`` when it can never run (its hand-over was cancelled, or the loop stopped first): no "never
        awaited" warning. One that ran is left alone (closed here, its clean-up would run on this thread), and so
        is one the loop may still be starting."""
        if ((future.cancelled() or not self.loop.is_running())
                and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED):
            coro.close()

    def post_blocking(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop for a caller about to block until it answers; ``RuntimeError`` from
        the loop's own thread, like :meth:`run`."""
        if self.on_loop_thread():
            raise RuntimeError(_SYNC_FROM_LOOP)
        self.loop.call_soon_threadsafe(fn, *args)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start ``coro`` on the loop from another thread without waiting for it."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run_async(self, coro: Coroutine[Any, Any, T], *, to_its_end: bool = False) -> T:
        """Await ``coro`` on the bridge's loop, whichever loop the caller runs on; ``to_its_end``: a caller
        cancelled meanwhile (before ``coro`` even started, too) stops waiting, and ``coro`` still runs to its end."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        future = self._hand_over(coro)
        waited: asyncio.Future[T] | None = None
        try:
            # (shielded, the caller's cancel stops at the wrapper: it would cancel ``future``, and so ``coro``)
            waited = asyncio.wrap_future(future)
            return await (asyncio.shield(waited) if to_its_end else waited)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if (caller is None or not caller.cancelling()) and self._stopped_under(future):
                raise LoopStoppedError(self.thread.name) from None
            raise  # the caller's own cancel
        finally:
            self.release(future)
            self._close_unstarted(coro, future)
            # The error raised through here keeps this frame (in its traceback) and the frame kept both futures,
            # which keep the error: a cycle per failed call, freed only by a full collection (100k calls refused
            # at a full queue held 800 MB).
            del future, waited

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, in call order, from any thread (at once on the loop thread)."""
        if self.on_loop_thread():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start a tracked task on the loop (loop thread only)."""
        task = self.loop.create_task(self._tracked(coro))
        if not task.done():  # (an eager task factory may run it to its end inside create_task: nothing to track)
            self._tasks[coro] = task

    async def _tracked(self, coro: Coroutine[Any, Any, Any]) -> None:
        # The task leaves the tracked tasks as its last step rather than through a done callback: the callback would
        # be scheduled for the next turn, one more loop iteration (a selector poll) per invocation served.
        try:
            await coro
        finally:
            self._tasks.pop(coro, None)

    async def cancel_tasks(self, spare: asyncio.Future[Any] | None = None) -> None:
        """Cancel every tracked task but the caller's and ``spare``, and wait for them to end (on the loop)."""
        current = asyncio.current_task()
        tasks = {coro: task for coro, task in self._tasks.items() if task is not current and task is not spare}
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.wait(tasks.values(), timeout=CANCEL_WAIT_S)
        left = [task for task in tasks.values() if not task.done()]
        self._abandoned.update(left)
        if left:
            # A handler that catches its cancel and goes on held shutdown() for good; it is left running on a loop
            # about to stop (its thread ends with the client's).
            log.warning("%d task(s) did not end within %g s of their cancel at shutdown and were left: %s", len(left),
                        CANCEL_WAIT_S, ", ".join(sorted(task.get_name() for task in left))[:1000])
        for coro, task in tasks.items():
            # A task cancelled before its first step never ran _tracked: forget it, and close the coroutine it never
            # awaited (no "never awaited" warning; a no-op for one that ran).
            if task.done() and self._tasks.pop(coro, None) is not None:
                coro.close()

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stop the loop and join its thread (``join_timeout`` seconds); the loop is closed once the thread ended.
        While tasks given to :meth:`stop_after` still run, it only joins: the loop stops once they have ended."""
        with self._stop_lock:
            if not self.thread.is_alive():
                return
            self._stopping = True
            if not self._stop_waits:
                with contextlib.suppress(RuntimeError):  # (closed: the thread is on its way out)
                    self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=join_timeout)
            if not self.thread.is_alive():
                self.loop.close()

    async def stop_async(self, join_timeout: float = 5.0) -> None:
        """:meth:`stop` from another event loop, without blocking it while the loop thread finishes: the wait for
        the thread's end (``join_timeout`` seconds at most) is awaited, and the join that follows returns at once.
        While tasks given to :meth:`stop_after` still run (a handler going on after its client's shutdown), the loop
        is left to stop once they have ended instead of being stopped under them.
        ``RuntimeError`` on the loop's own thread (it cannot wait for itself: see :meth:`stop_after`).

        Example:
            >>> import asyncio
            >>> bridge = LoopBridge()
            >>> asyncio.run(bridge.stop_async()); bridge.alive, bridge.loop.is_closed()
            (False, True)
        """
        if self.on_loop_thread():
            raise RuntimeError("stop_async() on the loop's own thread would wait for itself; use stop_after()")
        if self.thread.is_alive():
            # The thread closes its loop itself as it ends: this waiter may be cancelled before it could (the end of
            # asyncio.run cancels every task left), and the loop was then left unclosed.
            self._close_at_end = True
            self._stopping = True
            if not self._stop_waits:  # (else the loop stops once the tasks stop_after() waits for have ended)
                with contextlib.suppress(RuntimeError):  # (closed: the thread is on its way out)
                    self.loop.call_soon_threadsafe(self.loop.stop)
            try:
                async with asyncio.timeout(join_timeout):
                    await asyncio.wrap_future(self._thread_ended)
            except TimeoutError:
                return  # a callback that never returns holds the thread, as stop()'s join would find: left
        with self._stop_lock:
            self.thread.join(join_timeout)  # (it has left its loop: this returns at once)
            if not self.thread.is_alive():
                self.loop.close()

    def stop_after(self, *tasks: asyncio.Future[Any]) -> None:
        """On the loop thread: stop the loop once every task given to this call and to every earlier one (the
        callers', usually) has ended; the thread then closes the loop itself as it ends (nobody joins it). A task
        given later, while the loop still runs, holds the stop too. A :meth:`stop` or :meth:`stop_async` meanwhile
        joins the thread as the last of them ends, within its ``join_timeout``, instead of stopping the loop under them.

        Example:
            >>> bridge = LoopBridge()
            >>> async def last_step() -> None:
            ...     task = asyncio.current_task()
            ...     assert task is not None
            ...     bridge.stop_after(task)
            >>> bridge.submit(last_step()); bridge.thread.join(5); bridge.alive, bridge.loop.is_closed()
            (False, True)
        """
        for task in tasks:
            if task not in self._stop_waits:
                self._stop_waits.add(task)
                task.add_done_callback(self._stop_wait_ended)

    def _stop_wait_ended(self, task: asyncio.Future[Any]) -> None:
        """A task :meth:`stop_after` waits for has ended: the loop stops with the last one."""
        self._stop_waits.discard(task)
        if not self._stop_waits:
            self._close_at_end = True
            self._stopping = True
            self.loop.stop()


def _plain_standard_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is asyncio's own loop with nothing set on it, so an equal one on a parking selector may take
    its place: a policy of the user's may have set a handler, a task factory, debug mode or a default executor
    (which no getter shows), all lost with the loop, so its loops are kept as made."""
    if PARK_MISSING or sys.platform == "win32" or type(loop) is not asyncio.SelectorEventLoop:
        return False
    # Python 3.14 deprecates the policy getter (policies with it): there the loop's own settings are all there is.
    if sys.version_info < (3, 14) and type(asyncio.get_event_loop_policy()) is not asyncio.DefaultEventLoopPolicy:
        return False
    return (not loop.get_debug() and loop.get_exception_handler() is None and loop.get_task_factory() is None
            and loop.slow_callback_duration == 0.1)


class _BridgeLoop(asyncio.SelectorEventLoop):
    """asyncio's standard loop, whose wake-up socket is read once per wake-up instead of until it is empty.

    Why: a call handed over from another thread (``call_soon_threadsafe``: every sync ``trigger`` from the main
    thread) writes one byte there, and asyncio read it, then read again only to get ``BlockingIOError`` raised and
    caught: a system call and an exception per hand-over, on the path of the call. One read of 4096 bytes takes all
    the bytes there are (writers of a byte each give up on a full socket long before); any left over keep the socket
    readable, so the next turn's poll returns at once and reads them, as the loop in asyncio would have."""

    def _read_from_self(self) -> None:
        try:
            data = self._ssock.recv(4096)  # type: ignore[attr-defined]
        except (InterruptedError, BlockingIOError):
            return
        if data:
            self._process_self_data(data)  # type: ignore[attr-defined]


class _ParkingSelector(selectors.DefaultSelector):
    """The default selector with a lock its loop's thread holds at all times but while it waits for I/O, so that
    another thread holding the lock (:meth:`LoopBridge.park`) knows the loop is doing nothing else meanwhile.

    Held from the start (the loop is not running yet) and never given back once the loop ended, so park()
    declines then; a forked child sees a dead loop thread and declines too."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = threading.Lock()
        self.parked.acquire()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        parked = self.parked
        parked.release()
        try:
            return super().select(timeout)
        finally:
            parked.acquire()


def _nothing() -> None:
    """A callback that only wakes the loop."""


def _fail(waiter: Settle, error: BaseException) -> None:
    """Settle ``waiter`` with ``error`` unless it already ended (a concurrent future raises when set twice)."""
    if waiter.done():
        return
    try:
        waiter.set_exception(error)
    except concurrent.futures.InvalidStateError:  # settled between the check and the set
        pass
