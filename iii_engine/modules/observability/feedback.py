"""Which ``engine::log::*`` calls without trace context a ``log`` trigger's handler may have made (the feedback
backstop).

The engine starts each call it fires for a log trigger in a trace it marks, and a record in such a trace fires no
log trigger (``module.py``). A record that carries no trace context at all escapes that: the reference SDK (0.10)
runs a sync handler with ``run_in_executor`` without the handler's context, so its ``engine::log::*`` calls carry no
``traceparent``, and such a handler looped (3,839 calls in 4 s). Such a call arrives on a known connection:
:meth:`LogTriggerCalls.worker_busy` says whether that worker had a log trigger's call in flight then, or answered
one less than ``grace_ns`` ago. (Its ``Logger`` records come in ``LOGS`` frames that do not say which worker wrote
them: those stay ordinary, see ``OtelModule._feedback_untraced``.)

Example:
    >>> s = 1_000_000_000
    >>> calls = LogTriggerCalls(grace_ns=s // 2)
    >>> calls.started("w1")
    >>> calls.worker_busy("w1", 101 * s), calls.worker_busy("w2", 101 * s)
    (True, False)
    >>> calls.finished("w1", now_ns=100 * s + s // 5)  # answered 0.2 s later
    >>> calls.worker_busy("w1", 100 * s + s // 2), calls.worker_busy("w1", 101 * s)
    (True, False)
"""

from __future__ import annotations

GRACE_S = 0.5
"""How long after a log trigger's call was answered an ``engine::log::*`` call without trace context of the worker
that handled it still counts as made while handling it (a handler that hands its logging to a task of its own and
returns)."""


def untraced(trace_id: object) -> bool:
    """Whether ``trace_id`` names no trace: absent, empty or all zeros.

    Example:
        >>> untraced(None), untraced("0" * 32), untraced("ab" * 16)
        (True, True, False)
    """
    return not trace_id or (isinstance(trace_id, str) and trace_id.strip("0") == "")


class LogTriggerCalls:
    """The calls fired for log triggers: how many are in flight to each worker, and when each worker last answered
    one.

    Bounded: one count per worker with such a call in flight (they are bounded by ``max_fired_calls``), and one end
    time per worker that answered one less than ``grace_ns`` ago (older ones are swept as the table grows)."""

    def __init__(self, grace_ns: int = int(GRACE_S * 1e9)) -> None:
        self.grace_ns = grace_ns
        self._in_flight: dict[str, int] = {}
        self._ended_at: dict[str, int] = {}

    def started(self, worker_id: str) -> None:
        """A call for a log trigger was sent to ``worker_id``."""
        self._in_flight[worker_id] = self._in_flight.get(worker_id, 0) + 1

    def finished(self, worker_id: str, now_ns: int) -> None:
        """That call ended (answered, failed, timed out, or its worker went)."""
        left = self._in_flight.get(worker_id, 0) - 1
        if left < 0:
            return
        if left:
            self._in_flight[worker_id] = left
        else:
            del self._in_flight[worker_id]
        self._ended_at[worker_id] = now_ns
        if len(self._ended_at) > 2 * len(self._in_flight) + 64:
            self._ended_at = {w: t for w, t in self._ended_at.items() if now_ns - t <= self.grace_ns}

    def idle(self, now_ns: int) -> bool:
        """Whether no log trigger's call is in flight nor ended within ``grace_ns``: from now on, no ``engine::log::*``
        call is taken for a handler's.

        Example:
            >>> calls = LogTriggerCalls(grace_ns=10)
            >>> calls.started("w1"); calls.finished("w1", now_ns=5)
            >>> calls.idle(now_ns=10), calls.idle(now_ns=16)
            (False, True)
        """
        return not self._in_flight and all(now_ns - ended > self.grace_ns for ended in self._ended_at.values())

    def worker_busy(self, worker_id: str | None, now_ns: int) -> bool:
        """Whether ``worker_id`` has a log trigger's call in flight, or answered one within ``grace_ns``."""
        if worker_id is None:
            return False
        if worker_id in self._in_flight:
            return True
        ended = self._ended_at.get(worker_id)
        return ended is not None and now_ns - ended <= self.grace_ns
