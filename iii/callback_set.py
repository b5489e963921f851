"""A set of user callbacks run on the handler threads, never on the client's loop, with only the newest call waiting.

Used by :meth:`iii.iii.III.on_functions_available` and :meth:`iii.iii.III.on_registrations_ready`. A callback that
blocked on the loop stopped the worker (its calls timed out, its heartbeat with them), and one calling the sync API
got a ``RuntimeError``; so each call goes to a handler thread, one at a time and in order. Every call there says "this
is the state now" (the whole function list, "the registrations are in place"), so while the callbacks run only the
newest waiting call is kept: one blocked callback must not make the waiting calls grow without a bound.

Example:
    >>> import threading
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> seen, done = [], threading.Event()
    >>> pool = ThreadPoolExecutor(1)
    >>> callbacks = CallbackSet(lambda: pool, "example")
    >>> callbacks.callbacks[lambda n: (seen.append(n), done.set())] = None
    >>> callbacks.push(3)
    >>> done.wait(5), seen
    (True, [3])
    >>> pool.shutdown()
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Generic, ParamSpec

__all__ = ["CallbackSet"]

log = logging.getLogger(__name__)

P = ParamSpec("P")


class CallbackSet(Generic[P]):
    """Callbacks (in the order added; one added twice runs once) that :meth:`push` runs on ``executor()``'s threads.

    A callback's exception is logged (``what`` names the set) and the others still run. One removed from
    :attr:`callbacks` is not called after that (one already running finishes), except once when the removal, made
    on another thread, lands between the check and the call (nothing is locked around a user callback).
    """

    def __init__(self, executor: Callable[[], Executor], what: str) -> None:
        self._executor = executor
        self._what = what
        #: The callbacks, as a dict in insertion order (the reference's set kept one callback subscribed twice once).
        self.callbacks: dict[Callable[P, None], None] = {}
        #: The arguments of the call waiting for the callbacks: at most one, the newest.
        self.waiting: collections.deque[tuple[Any, Any]] = collections.deque(maxlen=1)
        self._delivering = False
        self._lock = threading.Lock()

    def push(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run every callback with these arguments on a handler thread, after the call being delivered; a call still
        waiting is replaced. Returns at once (from any thread)."""
        with self._lock:
            self.waiting.append((args, kwargs))
            if self._delivering:
                return
            self._delivering = True
        try:
            self._executor().submit(self._deliver)
        except RuntimeError:  # the handler threads were shut down: so is the client
            with self._lock:
                self.waiting.clear()
                self._delivering = False

    def _deliver(self) -> None:
        """Run every callback on each waiting call in turn, until none is left (a handler thread)."""
        while True:
            with self._lock:
                if not self.waiting:
                    self._delivering = False
                    return
                args, kwargs = self.waiting.popleft()
            for callback in list(self.callbacks):
                if callback not in self.callbacks:
                    continue  # removed while an earlier one ran: its remover has returned, so it is not called
                try:
                    callback(*args, **kwargs)
                except BaseException:  # the other callbacks still run; nothing is cancelled on a handler thread
                    log.exception("%s callback failed", self._what)
