"""Rate-limited warnings about things lost to a bound, with their counts by kind.

Used wherever a bound drops something nobody else will report: the SDK's best-effort frames at a full outbound
queue, and the engine's calls refused or skipped at its call bounds (``iii_engine.limits``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["BurstLog", "LossLog", "counts_said", "counts_text", "latest_tail"]


def latest_tail(latest: str | None, lead: str = "") -> str:
    """The end of a :class:`LossLog` warning naming its ``latest`` loss (after ``lead``), or ``""`` without one.

    Example:
        >>> latest_tail("worker w1"), latest_tail("f", "a call of "), latest_tail(None)
        ('; latest: worker w1', '; latest: a call of f', '')
    """
    return f"; latest: {lead}{latest}" if latest is not None else ""


def counts_text(counts: Mapping[str, int]) -> str:
    """A :class:`LossLog` warning's ``counts``, by kind in order of kind.

    Example:
        >>> counts_text({"void": 2, "answered": 1})
        '1 answered, 2 void'
    """
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def counts_said(counts: Mapping[str, int], kinds: Sequence[tuple[str, str]]) -> str:
    """A :class:`LossLog` warning's ``counts`` in words: each of ``kinds`` (``(kind, words)``, in that order) that
    ``counts`` holds, joined with "and".

    Example:
        >>> counts_said({"unsent": 2, "refused": 1}, (("refused", "call(s) refused"), ("unsent", "not sent")))
        '1 call(s) refused and 2 not sent'
    """
    return " and ".join(f"{counts[kind]} {words}" for kind, words in kinds if kind in counts)


class LossLog:
    """Rate-limited warnings about losses, with their counts by kind: the first loss is logged at once, later ones
    at most every ``interval`` seconds (a burst's counts are logged when the interval is over, even if nothing more
    is lost then). Remembers when the latest loss was, for :meth:`recent`. Loop thread only.

    ``write(counts, latest)`` logs the losses since the last warning (``counts`` by kind, never empty), naming
    ``latest`` (the newest loss; ``None`` when the warning is the end of a burst).

    Example:
        >>> seen = []
        >>> losses = LossLog(lambda counts, latest: seen.append((dict(counts), latest)), 10.0)
        >>> losses.flush(None)  # nothing lost: nothing logged
        >>> losses.count("void", 2); losses.flush("a void call")
        >>> seen
        [({'void': 2}, 'a void call')]
    """

    def __init__(self, write: Callable[[Mapping[str, int], str | None], object], interval: float) -> None:
        self._write = write
        self._interval = interval
        self._unlogged: dict[str, int] = {}  # losses by kind since the last warning
        self._logged_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        #: ``time.monotonic()`` of the latest loss
        self.lost_at = float("-inf")

    def count(self, kind: str, n: int = 1) -> None:
        """Count ``n`` losses of ``kind`` for the next warning, without logging (see :meth:`lost`)."""
        self._unlogged[kind] = self._unlogged.get(kind, 0) + n

    def lost(self, kind: str, what: str, n: int = 1) -> None:
        """``n`` losses of ``kind`` (``what`` names the newest): log now, or arm the end-of-interval warning."""
        self.count(kind, n)
        now = time.monotonic()
        self.lost_at = now
        if now - self._logged_at >= self._interval:
            self.flush(what)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._logged_at + self._interval - now,
                                                                self.flush, None)

    def flush(self, what: str | None) -> None:
        """Log what is not logged yet (now)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unlogged:
            counts, self._unlogged = self._unlogged, {}
            self._write(counts, what)
            self._logged_at = time.monotonic()

    def reset(self) -> None:
        """Forget what is not logged yet and when the last warning was: the next loss is logged at once, as the
        first was (a burst that ended, such as an outage, is over).

        Example:
            >>> seen = []
            >>> losses = LossLog(lambda counts, latest: seen.append(dict(counts)), 10.0)
            >>> losses.count("poll"); losses.reset(); losses.flush(None)
            >>> seen
            []
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unlogged = {}
        self._logged_at = float("-inf")

    def recent(self, window: float) -> bool:
        """Whether a loss happened within the last ``window`` seconds."""
        return time.monotonic() - self.lost_at < window

    def close(self) -> None:
        """Shutdown: a pending end-of-interval warning is logged now (its timer belongs to this loop)."""
        if self._timer is not None:
            self.flush(None)


class BurstLog:
    """The first ``burst`` events of each ``interval`` seconds logged one line each (``line(what)``), the rest
    counted by kind in ``losses`` (a :class:`LossLog`, whose warnings say how many): each case of a rare event
    keeps its own line, and a flood of them costs a few lines. Loop thread only for ``losses``.

    Example:
        >>> lines, seen = [], []
        >>> burst = BurstLog(2, 10.0, lines.append, LossLog(lambda counts, latest: seen.append(dict(counts)), 10.0))
        >>> for i in range(3):
        ...     burst.note("pending", f"trigger {i}")
        >>> lines, seen
        (['trigger 0', 'trigger 1'], [{'pending': 1}])
    """

    def __init__(self, burst: int, interval: float, line: Callable[[str], object], losses: LossLog) -> None:
        self._burst = burst
        self._interval = interval
        self._line = line
        self.losses = losses
        self._began = float("-inf")  # when the current interval began
        self._logged = 0  # lines logged in it

    def note(self, kind: str, what: str) -> None:
        """One event of ``kind`` (``what`` names it): its own line while the interval's burst lasts, else counted."""
        if self.take(kind, what):
            self._line(what)

    def take(self, kind: str, what: str) -> bool:
        """:meth:`note` for a caller that writes the line itself (at a level of its own): ``True`` while the
        interval's burst lasts (write it), else ``False``, the event counted in ``losses``.

        Example:
            >>> seen = []
            >>> burst = BurstLog(1, 10.0, print, LossLog(lambda counts, latest: seen.append(dict(counts)), 10.0))
            >>> burst.take("record", "a"), burst.take("record", "b"), seen
            (True, False, [{'record': 1}])
        """
        now = time.monotonic()
        if now - self._began >= self._interval:
            self._began, self._logged = now, 0
        if self._logged < self._burst:
            self._logged += 1
            return True
        self.losses.lost(kind, what)
        return False
