"""Rate-limited warnings about things lost to a bound, with their counts by kind.

Used wherever a bound drops something nobody else will report: the SDK's best-effort frames at a full outbound
queue, and the engine's calls refused or skipped at its call bounds (``iii_engine.limits``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

__all__ = ["LossLog"]


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
