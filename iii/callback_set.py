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
up for good after ``shutdown()`` returned, without a word. :meth:`CallbackSet.close` (the client's shutdown) ends the
calls and names, in a warning, a callback still running.

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

import collections
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Generic, ParamSpec

from .handler_threads import exit_refusal

__all__ = ["CallbackSet"]

log = logging.getLogger(__name__)

P = ParamSpec("P")


class CallbackSet(Generic[P]):
    """Callbacks (in the order added; one added twice runs once) that :meth:`push` runs on a daemon thread of the
    set's own (``executor`` ``None``), or on ``executor()``'s threads.

    A callback's exception is logged (``what`` names the set) and the others still run. One removed from
    :attr:`callbacks` is not called after that (one already running finishes), except once when the removal, made
    on another thread, lands between the check and the call (nothing is locked around a user callback). Every call
    runs in a fresh copy of the callback's context (see :meth:`add`).
    """

    def __init__(self, executor: Callable[[], Executor] | None, what: str) -> None:
        self._executor = executor
        self._what = what
        # (the thread running it, the callback) while a callback runs: named by close() if it has not returned
        self._running: tuple[int, Callable[P, None]] | None = None
        self._closed = False
        #: The callbacks, as a dict in insertion order (the reference's set kept one callback subscribed twice once),
        #: each with the context it was added in (``None``: the handler thread's own, copied for each call).
        self.callbacks: dict[Callable[P, None], contextvars.Context | None] = {}
        #: The arguments of the call waiting for the callbacks: at most one, the newest.
        self.waiting: collections.deque[tuple[Any, Any]] = collections.deque(maxlen=1)
        self._delivering = False
        self._lock = threading.Lock()

    def add(self, callback: Callable[P, None]) -> None:
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

    def close(self, spare_thread: int | None = None) -> str | None:
        """No more calls: none waiting is made, none after the one running. A callback still running (but on thread
        ``spare_thread``: the shutdown's caller) is named in a warning, and returned: nothing can stop a thread, but
        the set's own thread is a daemon, so the process does not wait for it at exit.

        Example:
            >>> callbacks = CallbackSet(None, "example")
            >>> callbacks.close() is None  # nothing running
            True
            >>> callbacks.push()  # closed: no call
        """
        with self._lock:
            self._closed = True
            self.waiting.clear()
        running = self._running
        if running is None or running[0] == spare_thread:
            return None
        name = _name(running[1])
        log.warning("Shut down with the %s callback %s still running (a thread cannot be stopped): it gets no more "
                    "calls, and %s", self._what, name,
                    "the process does not wait for it at exit (its thread is a daemon)" if self._executor is None
                    else "its executor's thread runs on")
        return name

    def _deliver(self) -> None:
        """Run every callback on each waiting call in turn, until none is left (a handler thread)."""
        while True:
            with self._lock:
                if not self.waiting or self._closed:
                    self._delivering = False
                    return
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
                    context.run(callback, *args, **kwargs)
                except BaseException:  # the other callbacks still run; nothing is cancelled on this thread
                    log.exception("%s callback failed", self._what)
                finally:
                    self._running = None


def _name(callback: Callable[..., Any]) -> str:
    """``callback`` as a warning names it: ``module.qualname`` (``__main__.on_change``), else its repr, cut short.

    Example:
        >>> _name(_name)
        'iii.callback_set._name'
    """
    qualname = getattr(callback, "__qualname__", None)
    if isinstance(qualname, str):
        module = getattr(callback, "__module__", None)
        return f"{module}.{qualname}"[:200] if isinstance(module, str) else qualname[:200]
    return repr(callback)[:200]
