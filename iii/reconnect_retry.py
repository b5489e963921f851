"""Calls answered ``function_not_found`` just after a reconnect, sent again until their function is back.

After an engine restart every worker reconnects on its own jittered backoff. A caller that is back first sends the
calls it queued during the outage (and new ones) before the callee's worker has registered its functions again, and
the engine answers ``function_not_found`` at once: every sync call made during a restart failed (an attack: calls
with a 10 s timeout failed 1 s after the restart; the callee was back 0.5 s later). Void calls are held by our engine
(``void_grace_ms``) and queued jobs wait for their function (``missing_function_grace_ms``); a call with a result
is the caller's to wait for, since only the caller knows how long it waits.

So a call started while this client was reconnecting, or in the settling window after a reconnect, is remembered
(its frame); answered ``function_not_found`` within that window, it is sent again, with the same invocation id,
after a backoff (:data:`FIRST_DELAY_S` doubling to :data:`MAX_DELAY_S`, per function), until it gets another answer,
the window ends or the call's own timeout does. Such an answer means the function did not run, so sending it again
cannot run it twice. A call whose timeout ends while it waits to be sent again fails with the engine's
``function_not_found`` error (it did not run), not a ``TimeoutError``. Outside the window nothing changes: a call of
a function nobody serves fails at once, as with the reference SDK. Bounded: at most :data:`MAX_CALLS` calls and
:data:`MAX_BYTES` bytes of frames are remembered (beyond, a call is not, and fails at once as before).

Example:
    >>> import asyncio
    >>> from iii.errors import InvocationError
    >>> async def demo() -> list[str]:
    ...     sent: list[str] = []
    ...     loop = asyncio.get_running_loop()
    ...     retry = NotFoundRetry(loop, 5.0, resend=lambda calls: sent.extend(frame for _, _, frame in calls))
    ...     retry.lost(); retry.ready()  # a reconnect: the window opens
    ...     retry.remember("i1", "late::fn", "frame-1")
    ...     waiting = retry.retry("i1", InvocationError("function_not_found", "Function late::fn not found"))
    ...     await asyncio.sleep(FIRST_DELAY_S * 2)
    ...     return [str(waiting), *sent]
    >>> asyncio.run(demo())
    ['True', 'frame-1']
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Final

from .errors import InvocationError

__all__ = ["FIRST_DELAY_S", "MAX_BYTES", "MAX_CALLS", "MAX_DELAY_S", "NotFoundRetry", "settling_window"]

log = logging.getLogger(__name__)

FIRST_DELAY_S: Final = 0.05
"""The wait before a call answered ``function_not_found`` is first sent again."""
MAX_DELAY_S: Final = 1.0
"""The longest wait between two sends of such a call (the wait doubles per function from :data:`FIRST_DELAY_S`)."""
MAX_CALLS: Final = 10_000
"""Calls remembered at once (started while reconnecting or settling, not yet answered)."""
MAX_BYTES: Final = 16 * 1024 * 1024
"""Frame bytes of the calls remembered at once."""

Resend = Callable[[list[tuple[str, str, str | bytes]]], None]
"""``resend(calls)``: send again each ``(invocation_id, function_id, frame)`` of ``calls`` (one function's, in the order
they were answered), each tracked again, waiting for room in the outbound queue rather than failing at a full one
(3,000 such calls sent in one turn overfilled it: 2,000 failed "never sent")."""
MAX_TOLD: Final = 1024
"""Functions named in INFO lines per window (a line each); past it, one line says more were not named."""


def settling_window(max_delay_ms: float, jitter: float) -> float:
    """Seconds after a reconnect in which ``function_not_found`` is taken for a callee not back yet: the longest
    wait between two reconnect attempts of a worker with the same reconnection settings (``max_delay_ms`` plus its
    jitter), at least 5 s and at most 120 s.

    Example:
        >>> settling_window(30_000, 0.3), settling_window(100, 0), settling_window(10**9, 0)
        (39.0, 5.0, 120.0)
    """
    return min(120.0, max(5.0, max_delay_ms / 1000 * (1 + max(0.0, jitter))))


class NotFoundRetry:
    """The calls of one client that may be sent again (see the module docstring). Loop thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop, window_s: float, *, resend: Resend) -> None:
        self._loop = loop
        self._window_s = window_s
        self._resend = resend
        #: The loop time the window ends: 0.0 none open, infinity while reconnecting (until :meth:`ready`).
        self.until = 0.0
        self._frames: dict[str, tuple[str, str | bytes]] = {}  # invocation id -> (function id, frame)
        self._bytes = 0
        self._waiting: dict[str, dict[str, InvocationError]] = {}  # function -> its calls answered not found
        self._timers: dict[str, asyncio.TimerHandle] = {}  # function -> the timer of its next send
        self._delays: dict[str, float] = {}  # function -> the wait before its next send
        self._told: set[str] = set()  # functions logged in this window

    @property
    def active(self) -> bool:
        """Whether any call is remembered (a result need not be looked up otherwise)."""
        return bool(self._frames)

    def lost(self) -> None:
        """The connection was lost: calls started from now on are remembered until a window after the reconnect."""
        self.until = math.inf

    def ready(self) -> None:
        """A reconnect is ready: the settling window starts now."""
        self.until = self._loop.time() + self._window_s
        self._told.clear()
        self._delays = {function_id: delay for function_id, delay in self._delays.items()
                        if function_id in self._waiting}

    def remember(self, invocation_id: str, function_id: str, frame: str | bytes) -> None:
        """Call ``invocation_id`` started now: remembered while reconnecting or in the window (and within the
        bounds)."""
        if not self.until:
            return
        if self._loop.time() >= self.until:  # the window is over: later calls skip this at the first test
            self.until = 0.0
            self._told.clear()
            if not self._waiting:
                self._delays.clear()
            return
        size = len(frame)
        if invocation_id in self._frames or len(self._frames) >= MAX_CALLS or self._bytes + size > MAX_BYTES:
            return  # (held already: a second loss with it still queued counted its bytes twice, for good)
        self._frames[invocation_id] = (function_id, frame)
        self._bytes += size

    def forget(self, invocation_id: str) -> None:
        """Call ``invocation_id`` ended (answered, failed, timed out, given up)."""
        entry = self._frames.pop(invocation_id, None)
        if entry is None:
            return
        self._bytes -= len(entry[1])
        function_id = entry[0]
        waiting = self._waiting.get(function_id)
        if waiting is not None and waiting.pop(invocation_id, None) is not None and not waiting:
            self._stop(function_id)
        elif waiting is None and function_id not in self._timers:
            self._delays.pop(function_id, None)  # (none of its calls waits: the next not-found starts over)

    def retry(self, invocation_id: str, error: InvocationError) -> bool:
        """Call ``invocation_id`` was answered ``error``: ``True`` when it will be sent again (a remembered call
        answered ``function_not_found`` within the window), else it is forgotten and ``False``."""
        entry = self._frames.get(invocation_id)
        if entry is None:
            return False
        if error.code != "function_not_found" or self._loop.time() >= self.until:
            self.forget(invocation_id)
            return False
        function_id = entry[0]
        self._waiting.setdefault(function_id, {})[invocation_id] = error
        if function_id not in self._timers:
            delay = self._delays.setdefault(function_id, FIRST_DELAY_S)
            self._timers[function_id] = self._loop.call_later(delay, self._send, function_id)
            if function_id not in self._told and len(self._told) <= MAX_TOLD:
                self._told.add(function_id)
                if len(self._told) > MAX_TOLD:
                    log.info("More functions were not found just after the reconnect; their calls are sent again "
                             "too (not named)")
                else:
                    log.info("Function %r was not found just after the reconnect: calls of it are sent again until "
                             "a worker registers it, for at most %.0f s (or each call's timeout)", function_id[:200],
                             max(0.0, self.until - self._loop.time()))
        return True

    def expired(self, invocation_id: str, timeout_ms: float | None = None) -> InvocationError | None:
        """Call ``invocation_id`` timed out: the ``function_not_found`` error it was last answered if it was
        waiting to be sent again (it did not run), with a note saying it was sent again for ``timeout_ms``, else
        ``None``; forgotten either way."""
        entry = self._frames.get(invocation_id)
        error = None if entry is None else self._waiting.get(entry[0], {}).get(invocation_id)
        self.forget(invocation_id)
        if error is not None:
            waited = f" for {timeout_ms:g} ms (its timeout)" if timeout_ms is not None else ""
            error.add_note(f"sent again{waited} after the client reconnected to the engine: no worker registered "
                           "the function in that time (iii.reconnect_retry)")
        return error

    def close(self) -> list[str]:
        """Stop every timer and forget every call (the client is shutting down); the ids of the calls that were
        waiting to be sent again, which nothing else knows of any more (the caller must fail them)."""
        waiting = [invocation_id for calls in self._waiting.values() for invocation_id in calls]
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        self._delays.clear()
        self._frames.clear()
        self._told.clear()
        self._bytes = 0
        self.until = 0.0
        return waiting

    def _stop(self, function_id: str) -> None:
        self._waiting.pop(function_id, None)
        self._delays.pop(function_id, None)
        timer = self._timers.pop(function_id, None)
        if timer is not None:
            timer.cancel()

    def _send(self, function_id: str) -> None:
        del self._timers[function_id]
        waiting = self._waiting.pop(function_id, {})
        self._delays[function_id] = min(MAX_DELAY_S, self._delays.get(function_id, FIRST_DELAY_S) * 2)
        calls = [(invocation_id, function_id, entry[1]) for invocation_id in waiting
                 if (entry := self._frames.get(invocation_id)) is not None]
        if calls:
            self._resend(calls)
