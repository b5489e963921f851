"""A set of user callbacks run on a daemon thread of the set's own, never on the client's loop, with only the newest
call waiting.

Used by :meth:`iii.iii.III.on_functions_available` and :meth:`iii.iii.III.on_registrations_ready`. A callback that
blocked on the loop stopped the worker (its calls timed out, its heartbeat with them), and one calling the sync API
got a ``RuntimeError``; so each call goes to another thread, one at a time and in order. Every call there says "this
is the state now" (the whole function list, "the registrations are in place"), so while the callbacks run only the
newest waiting call is kept: one blocked callback must not make the waiting calls grow without a bound.

The thread is a daemon, started when a call comes and ending once none waits: a callback that never returns holds the
calls of the set's other callbacks (they run one after the other, as the reference SDK runs them on its loop), but not
the process's exit. On the handler threads, which the interpreter joins at exit, one blocked callback kept the process
up for good after ``shutdown()`` returned, without a word. The client's shutdown closes the set
(:meth:`~CallbackSet.close`) as it begins: no call is made from then on, and a call still waiting is dropped (as the
handler runs still queued are). Then :meth:`~CallbackSet.finish` gives a callback still running a bounded time to
return (the client's ``CANCEL_WAIT_S``, 3 s, as for the async handlers it cancels) and names, in a warning, one that
has not: a slow but finite callback is not cut off by the process's exit (it was, once the set had a daemon thread of
its own).

A callback that returns an awaitable (an ``async def``) has it run by the set's ``run_awaitable`` (the client's: on
its loop, as its async handlers are), the set's thread waiting for its end: the calls stay one after the other. The
reference SDK never awaited it ("coroutine ... was never awaited").

Each call of a callback runs in a copy of the context it was added in (:meth:`CallbackSet.add`), as asyncio runs a
callback in the context it was scheduled from: on a shared handler thread, one callback's ``ContextVar.set`` was
seen by the next callback run there, and a callback never saw the context of the code that subscribed it.

Example:
    >>> import threading
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> seen, done = [], threading.Event()
    >>> pool = ThreadPoolExecutor(1)
    >>> callbacks = CallbackSet(lambda: pool, "example")
    >>> callbacks.add(lambda n: (seen.append(n), done.set()))
    >>> callbacks.push(3)
    >>> done.wait(5), seen
    (True, [3])
    >>> pool.shutdown()
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, Final, Generic, ParamSpec

from .handler_threads import exit_refusal
from .loop_bridge import LoopStoppedError

CANCELLED_CALLBACK_WAIT_S: Final = 1.0
"""How long a shutdown waits for an async callback it cancelled to run its cleanup and end."""

__all__ = ["CallbackSet", "callback_name"]

log = logging.getLogger(__name__)

P = ParamSpec("P")


class CallbackSet(Generic[P]):
    """Callbacks (in the order added; one added twice runs once) that :meth:`push` runs on a daemon thread of the
    set's own (``executor`` ``None``), or on ``executor()``'s threads.

    A callback's exception is logged (``what`` names the set) and the others still run. One removed from
    :attr:`callbacks` is not called after that (one already running finishes), except once when the removal, made
    on another thread, lands between the check and the call (nothing is locked around a user callback). Every call
    runs in a fresh copy of the callback's context (see :meth:`add`).

    What a callback returns that is awaitable is awaited through ``run_awaitable(coroutine)``, which blocks until the
    coroutine has ended (the client's: :meth:`iii.loop_bridge.LoopBridge.run`, on its loop); without one, it runs
    in an event loop of its own on the set's thread (``asyncio.run``).
    """

    def __init__(self, executor: Callable[[], Executor] | None, what: str,
                 run_awaitable: Callable[[Coroutine[Any, Any, None]], object] | None = None) -> None:
        self._executor = executor
        self._what = what
        self._run_awaitable = run_awaitable
        # (the thread running it, the callback) while a callback runs: named by finish() if it has not returned
        self._running: tuple[int, Callable[P, object]] | None = None
        # the task of an async callback running on run_awaitable's loop (one that shuts the client down is spared)
        self._running_task: asyncio.Task[Any] | None = None
        self._closed = False
        # told (from the set's thread) once the set's thread has no call left to make: finish() waits on it
        self._on_idle: list[Callable[[], None]] = []
        #: The callbacks, as a dict in insertion order (the reference's set kept one callback subscribed twice once),
        #: each with the context it was added in (``None``: the handler thread's own, copied for each call).
        self.callbacks: dict[Callable[P, object], contextvars.Context | None] = {}
        #: The arguments of the call waiting for the callbacks: at most one, the newest.
        self.waiting: collections.deque[tuple[Any, Any]] = collections.deque(maxlen=1)
        self._delivering = False
        self._lock = threading.Lock()

    def add(self, callback: Callable[P, object]) -> None:
        """Add ``callback``, to run in a copy of the caller's context at each call: it sees the context variables
        (a request id, OpenTelemetry's current span) of the code that added it, and what it sets is seen by no other
        call. Added again, it keeps its place and its first context. Removed with ``callbacks.pop(callback)``.

        Example:
            >>> from concurrent.futures import ThreadPoolExecutor
            >>> callbacks = CallbackSet(lambda: ThreadPoolExecutor(1), "example")
            >>> callbacks.add(print)
            >>> list(callbacks.callbacks) == [print]
            True
        """
        self.callbacks.setdefault(callback, contextvars.copy_context())

    def push(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run every callback with these arguments on a handler thread, after the call being delivered; a call still
        waiting is replaced. Returns at once (from any thread)."""
        with self._lock:
            if self._closed:
                return
            self.waiting.append((args, kwargs))
            if self._delivering:
                return
            self._delivering = True
        try:
            if self._executor is None:
                threading.Thread(target=self._deliver, name=f"iii {self._what} callbacks", daemon=True).start()
            else:
                self._executor().submit(self._deliver)
        except RuntimeError as exc:  # the executor was shut down (so is the client), or the interpreter is exiting
            with self._lock:
                self.waiting.clear()
                self._delivering = False
            if self._executor is None and not exit_refusal(exc):
                log.warning("No thread could be started for the %s callbacks (%s): this call of them is dropped",
                            self._what, exc)

    def close(self) -> None:
        """No more calls, from now on: a call waiting is dropped (it told the state of a connection the shutdown
        ends), none is made after the callback running, and :meth:`push` makes none.

        Example:
            >>> callbacks = CallbackSet(None, "example")
            >>> callbacks.close()
            >>> callbacks.push()  # closed: no call
            >>> asyncio.run(callbacks.finish(1.0)) is None  # nothing running
            True
        """
        with self._lock:
            self._closed = True
            self.waiting.clear()

    async def finish(self, seconds: float, spare_thread: int | None = None,
                     spare_task: asyncio.Future[Any] | None = None) -> str | None:
        """After :meth:`close`, on a loop: wait at most ``seconds`` for a callback still running to return;
        one that has not is named in a warning, and returned (nothing can stop a thread, but the set's own thread is
        a daemon: the process does not wait for it at exit). A callback running on thread ``spare_thread``, or as
        task ``spare_task`` (the shutdown's caller: it waits for the shutdown) is neither waited for nor named.

        Example:
            >>> import threading
            >>> callbacks, entered, go = CallbackSet(None, "example"), threading.Event(), threading.Event()
            >>> callbacks.add(lambda: (entered.set(), go.wait(5)))
            >>> callbacks.push()
            >>> _ = entered.wait(5)
            >>> callbacks.close()
            >>> asyncio.run(callbacks.finish(0.01))  # still running
            'iii.callback_set.<lambda>'
            >>> go.set()
            >>> asyncio.run(callbacks.finish(5)) is None  # it returned
            True
        """
        loop = asyncio.get_running_loop()
        idle: asyncio.Future[None] = loop.create_future()

        def tell() -> None:
            try:
                loop.call_soon_threadsafe(_resolve, idle)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

        with self._lock:
            if not self._delivering or self._spared(spare_thread, spare_task):
                return None
        await self._until_idle(idle, tell, seconds)
        running = self._running
        if idle.done() or running is None:
            return None
        name = callback_name(running[1])
        task = self._running_task
        if task is not None and not task.done():
            # An async one can be stopped: cancelled, so its finally blocks run (it was left to be destroyed pending
            # with its loop, its cleanup never run, and its end logged as an ERROR)
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: it is over
                task.get_loop().call_soon_threadsafe(task.cancel)
            await self._until_idle(idle, tell, CANCELLED_CALLBACK_WAIT_S)
            log.warning("Shut down with the async %s callback %s still running %g s later: cancelled%s", self._what,
                        name, seconds, "" if idle.done() else
                        f", and not ended {CANCELLED_CALLBACK_WAIT_S:g} s after (it goes with the client's loop)")
            return name
        log.warning("Shut down with the %s callback %s still running %g s later (a thread cannot be stopped): it gets "
                    "no more calls, and %s", self._what, name, seconds,
                    "the process does not wait for it at exit (its thread is a daemon)" if self._executor is None
                    else "its executor's thread runs on")
        return name

    async def _until_idle(self, idle: asyncio.Future[None], tell: Callable[[], None], seconds: float) -> None:
        """Wait at most ``seconds`` for the set's thread to run out of calls (``tell`` resolves ``idle`` then)."""
        with self._lock:
            if not self._delivering:
                _resolve(idle)
                return
            self._on_idle.append(tell)
        try:
            await asyncio.wait({idle}, timeout=seconds)
        finally:
            with self._lock:
                if tell in self._on_idle:
                    self._on_idle.remove(tell)

    def _spared(self, spare_thread: int | None, spare_task: asyncio.Future[Any] | None) -> bool:
        running = self._running
        if running is None:
            return False
        return running[0] == spare_thread or (spare_task is not None and self._running_task is spare_task)

    def _deliver(self) -> None:
        """Run every callback on each waiting call in turn, until none is left (the set's thread)."""
        while True:
            with self._lock:
                if not self.waiting or self._closed:
                    self._delivering = False
                    told, self._on_idle = self._on_idle, []
                    break
                args, kwargs = self.waiting.popleft()
            for callback in list(self.callbacks):
                if self._closed:  # (the client shut down while an earlier one ran)
                    break
                try:
                    added_in = self.callbacks[callback]
                except KeyError:
                    continue  # removed while an earlier one ran: its remover has returned, so it is not called
                # A copy each call: a thread's context is shared by every callback (and handler) run there.
                context = contextvars.copy_context() if added_in is None else added_in.copy()
                self._running = (threading.get_ident(), callback)
                try:
                    outcome = context.run(callback, *args, **kwargs)
                    if inspect.isawaitable(outcome):  # an async def: run to its end (in the same context)
                        context.run(self._await, outcome)
                except (asyncio.CancelledError, concurrent.futures.CancelledError, LoopStoppedError):
                    if not self._closed:  # (cancelled, or its loop stopped, by the shutdown: said there)
                        log.exception("%s callback failed", self._what)
                except BaseException:  # the other callbacks still run; nothing is cancelled on this thread
                    log.exception("%s callback failed", self._what)
                finally:
                    self._running = None
                    self._running_task = None
        for tell in told:
            tell()

    def _await(self, awaitable: Awaitable[object]) -> None:
        """Run an async callback's ``awaitable`` to its end: through ``run_awaitable``, or in a loop of its own."""
        async def run() -> None:
            self._running_task = asyncio.current_task()
            await awaitable

        try:
            if self._run_awaitable is None:
                asyncio.run(run())
            else:
                self._run_awaitable(run())
        finally:
            # never started (the client's loop had stopped): closed, no "never awaited" warning for it
            if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED:
                awaitable.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def callback_name(callback: Callable[..., Any]) -> str:
    """``callback`` as a warning names it: ``module.qualname`` (``__main__.on_change``), else its repr, cut short.

    Example:
        >>> callback_name(callback_name)
        'iii.callback_set.callback_name'
    """
    qualname = getattr(callback, "__qualname__", None)
    if isinstance(qualname, str):
        module = getattr(callback, "__module__", None)
        return f"{module}.{qualname}"[:200] if isinstance(module, str) else qualname[:200]
    return repr(callback)[:200]
