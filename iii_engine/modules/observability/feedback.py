"""Which log records without trace context a ``log`` trigger's handler may have written (the feedback backstop).

The engine starts each call it fires for a log trigger in a trace it marks, and a record in such a trace fires no
log trigger (``module.py``). A record that carries no trace context at all escapes that: the reference SDK (0.10)
runs a sync handler with ``run_in_executor`` without the handler's context, so its ``Logger`` records have trace id 0
and its ``engine::log::*`` calls no ``traceparent``, and such a handler looped (3,423-3,839 calls in 4 s). This
keeps where and when those calls were in flight, so that such a record can still be told apart:

* an ``engine::log::*`` call arrives on a known connection: :meth:`LogTriggerCalls.worker_busy` says whether that
  worker had a log trigger's call in flight then, or answered one less than ``grace_ns`` ago;
* a worker's ``LOGS`` frame does not say which worker wrote it (the reference SDK sends telemetry on a connection
  of its own): :meth:`LogTriggerCalls.written_during` says whether its timestamp falls while any log trigger's
  call was in flight (its first ``stamp_cap_ns``), give or take ``stamp_grace_ns`` (both smaller: this one holds
  for every worker's records).

Example:
    >>> s = 1_000_000_000
    >>> calls = LogTriggerCalls(grace_ns=s // 2, stamp_grace_ns=s // 10)
    >>> calls.started("w1", now_ns=100 * s)
    >>> calls.worker_busy("w1", 101 * s), calls.worker_busy("w2", 101 * s), calls.written_during(100 * s)
    (True, False, True)
    >>> calls.finished("w1", now_ns=100 * s + s // 5, started_ns=100 * s)  # answered 0.2 s later
    >>> calls.worker_busy("w1", 100 * s + s // 2), calls.worker_busy("w1", 101 * s)
    (True, False)
    >>> calls.written_during(100 * s + s // 4), calls.written_during(101 * s), calls.written_during(99 * s)
    (True, False, False)
"""

from __future__ import annotations

import bisect
import math

GRACE_S = 0.5
"""How long after a log trigger's call was answered a record without trace context still counts as written while
handling it, when it came in an ``engine::log::*`` call of the worker that handled it (a handler that hands its
logging to a task of its own and returns)."""
STAMP_GRACE_S = 0.1
"""How far outside the time a log trigger's call was in flight a ``LOGS`` record's timestamp may be and still count
as written while handling it (the worker's clock off the engine's, a record written just after the handler returned).
Smaller than :data:`GRACE_S`: which worker wrote such a record is not known, so it holds for every worker's."""
STAMP_CAP_S = 1.0
"""A call counts for :meth:`LogTriggerCalls.written_during` during its first this many seconds in flight only: a
handler that never answers (or takes minutes) would otherwise keep every worker's records without trace context from
firing log triggers while it hangs."""
SLOT_NS = 50_000_000
"""Past calls are remembered as the 50 ms slots of time they were in flight in."""
MAX_SLOTS = 4096
"""Slots kept (the most recent: ~200 s of continuous calls); a record stamped in a forgotten slot fires log triggers."""


def untraced(trace_id: object) -> bool:
    """Whether ``trace_id`` names no trace: absent, empty or all zeros.

    Example:
        >>> untraced(None), untraced("0" * 32), untraced("ab" * 16)
        (True, True, False)
    """
    return not trace_id or (isinstance(trace_id, str) and trace_id.strip("0") == "")


class LogTriggerCalls:
    """The calls fired for log triggers: how many are in flight, to which worker, and when they were.

    Bounded: one count and one end time per worker that had such a call less than ``grace_ns`` ago, one start time
    per call in flight (they are bounded by ``max_fired_calls``), and :data:`MAX_SLOTS` past slots."""

    def __init__(self, grace_ns: int = int(GRACE_S * 1e9), stamp_grace_ns: int = int(STAMP_GRACE_S * 1e9),
                 stamp_cap_ns: int = int(STAMP_CAP_S * 1e9)) -> None:
        self.grace_ns = grace_ns
        self.stamp_grace_ns = stamp_grace_ns
        self.stamp_cap_ns = stamp_cap_ns
        self._in_flight: dict[str, int] = {}
        self._ended_at: dict[str, int] = {}
        self._starts: list[int] = []  # of the calls in flight, in order
        self._slots: dict[int, None] = {}  # past calls' slots of SLOT_NS, oldest first

    def started(self, worker_id: str, now_ns: int) -> None:
        """A call for a log trigger was sent to ``worker_id`` (give :meth:`finished` the same ``now_ns`` later as
        ``started_ns``)."""
        self._in_flight[worker_id] = self._in_flight.get(worker_id, 0) + 1
        bisect.insort(self._starts, now_ns)

    def finished(self, worker_id: str, now_ns: int, started_ns: int) -> None:
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
        i = bisect.bisect_left(self._starts, started_ns)
        if i < len(self._starts) and self._starts[i] == started_ns:
            del self._starts[i]
        for slot in range(started_ns // SLOT_NS, min(now_ns, started_ns + self.stamp_cap_ns) // SLOT_NS + 1):
            self._slots.pop(slot, None)
            self._slots[slot] = None
        while len(self._slots) > MAX_SLOTS:
            del self._slots[next(iter(self._slots))]

    def idle(self, now_ns: int) -> bool:
        """Whether no log trigger's call is in flight nor ended within ``grace_ns``: from now on, records without
        trace context fire log triggers again (those stamped before may still not).

        Example:
            >>> calls = LogTriggerCalls(grace_ns=10)
            >>> calls.started("w1", now_ns=0); calls.finished("w1", now_ns=5, started_ns=0)
            >>> calls.idle(now_ns=10), calls.idle(now_ns=16)
            (False, True)
        """
        return not self._starts and all(now_ns - ended > self.grace_ns for ended in self._ended_at.values())

    def worker_busy(self, worker_id: str | None, now_ns: int) -> bool:
        """Whether ``worker_id`` has a log trigger's call in flight, or answered one within ``grace_ns``."""
        if worker_id is None:
            return False
        if worker_id in self._in_flight:
            return True
        ended = self._ended_at.get(worker_id)
        return ended is not None and now_ns - ended <= self.grace_ns

    def written_during(self, at_ns: int) -> bool:
        """Whether a log trigger's call (to any worker) was in flight at ``at_ns`` (within its first
        ``stamp_cap_ns``), give or take ``stamp_grace_ns`` (past calls: to the :data:`SLOT_NS`).

        Example (a call never answered covers its first second only):
            >>> calls = LogTriggerCalls(stamp_grace_ns=0, stamp_cap_ns=10**9)
            >>> calls.started("hung", now_ns=10**9)
            >>> calls.written_during(10**9 // 2), calls.written_during(15 * 10**8), calls.written_during(3 * 10**9)
            (False, True, False)
        """
        grace = self.stamp_grace_ns
        # a call in flight that started by at_ns + grace and not before at_ns - cap - grace
        i = bisect.bisect_right(self._starts, at_ns + grace) - 1
        if i >= 0 and self._starts[i] >= at_ns - self.stamp_cap_ns - grace:
            return True
        first, last = (at_ns - grace) // SLOT_NS, math.ceil((at_ns + grace) / SLOT_NS)
        return any(slot in self._slots for slot in range(first, min(last, first + 64) + 1))
