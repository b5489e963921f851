"""Resource metrics of the worker process, from the standard library only (``os``, ``resource``, ``/proc``).

Ours beyond the reference: the event-loop lag, measured by :class:`EventLoopLagMonitor` when one is attached to
the collector.

Example:
    >>> snapshot = WorkerMetricsCollector().collect()
    >>> snapshot.runtime, snapshot.memory_rss > 0
    ('python', True)
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["EventLoopLagMonitor", "WorkerMetrics", "WorkerMetricsCollector"]

_MICROS: Final = 1_000_000


@dataclass
class WorkerMetrics:
    """One snapshot. Memory in bytes, CPU times in microseconds (cumulative), CPU percent since last snapshot."""

    memory_rss: int
    memory_vms: int
    cpu_percent: float
    uptime_seconds: float
    timestamp_ms: int
    memory_heap_used: int = 0
    memory_heap_total: int = 0
    memory_external: int = 0
    cpu_user_micros: int = 0
    cpu_system_micros: int = 0
    runtime: str = "python"
    event_loop_lag_ms: float = 0.0


def _proc_memory() -> tuple[int, int]:
    """``(rss, vms)`` from ``/proc/self/status`` on Linux; ``(0, 0)`` where unavailable."""
    rss = vms = 0
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmSize:"):
                    vms = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return rss, vms


def _memory() -> tuple[int, int]:
    rss, vms = _proc_memory()
    if rss:
        return rss, vms
    try:
        import resource
    except ImportError:  # Windows
        return 0, 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Peak, not current, RSS: the best the resource module offers; kB on Linux, bytes on macOS.
    return (peak if sys.platform == "darwin" else peak * 1024), 0


def _cpu_seconds() -> tuple[float, float]:
    times = os.times()
    return times.user + times.children_user, times.system + times.children_system


def _heap_used() -> int:
    import tracemalloc

    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0


class EventLoopLagMonitor:
    """Measures how late the event loop runs a callback scheduled every ``interval`` seconds.

    ``lag_ms`` is the latest delay; ``max_lag_ms`` the worst since the last :meth:`take_max`.

    Example:
        >>> async def main() -> float:
        ...     monitor = EventLoopLagMonitor(interval=0.01)
        ...     monitor.start()
        ...     await asyncio.sleep(0.05)
        ...     monitor.stop()
        ...     return monitor.lag_ms
        >>> asyncio.run(main()) >= 0
        True
    """

    def __init__(self, interval: float = 0.5) -> None:
        # NaN passed a plain `<= 0` check and then scheduled the first sample at NaN; a string failed the comparison
        # with a TypeError that did not name the argument.
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < math.inf:
            raise ValueError(f"interval must be positive and a finite number of seconds, got {interval!r}")
        self.interval = interval
        self.lag_ms = 0.0
        self.max_lag_ms = 0.0
        self.samples = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start sampling on ``loop`` (default: the running loop). Call from that loop's thread."""
        self.stop()
        self._loop = loop or asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        """Stop sampling; the last values stay readable."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def take_max(self) -> float:
        """The worst lag since the previous call, resetting it."""
        worst, self.max_lag_ms = self.max_lag_ms, 0.0
        return worst

    def _schedule(self) -> None:
        assert self._loop is not None
        self._expected = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self.lag_ms = max(0.0, (self._loop.time() - self._expected) * 1000.0)
        self.max_lag_ms = max(self.max_lag_ms, self.lag_ms)
        self.samples += 1
        self._schedule()


class WorkerMetricsCollector:
    """Takes :class:`WorkerMetrics` snapshots; ``collect_cached`` reuses one for ``CACHE_TTL_SECONDS``.

    The cache lets several gauge callbacks of one export cycle share a single snapshot.

    Example:
        >>> collector = WorkerMetricsCollector()
        >>> collector.collect_cached() is collector.collect_cached()
        True
    """

    CACHE_TTL_SECONDS: float = 0.5

    def __init__(self, lag_monitor: EventLoopLagMonitor | None = None) -> None:
        self.lag_monitor = lag_monitor
        self._started = time.monotonic()
        self._last_at = self._started
        try:
            self._last_user, self._last_system = _cpu_seconds()
        except OSError:
            self._last_user = self._last_system = 0.0
        self._cached: tuple[float, WorkerMetrics] | None = None

    def collect_cached(self) -> WorkerMetrics:
        """The last snapshot if younger than ``CACHE_TTL_SECONDS``, else a fresh one."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.CACHE_TTL_SECONDS:
            return self._cached[1]
        snapshot = self.collect()
        self._cached = (now, snapshot)
        return snapshot

    def collect(self) -> WorkerMetrics:
        """A fresh snapshot; CPU percent covers the time since the previous ``collect``."""
        now = time.monotonic()
        rss, vms = _memory()
        percent = 0.0
        user = system = 0.0
        try:
            user, system = _cpu_seconds()
        except OSError:
            pass
        else:
            elapsed = now - self._last_at
            if elapsed > 0:
                used = (user - self._last_user) + (system - self._last_system)
                percent = min(100.0, max(0.0, used / elapsed * 100.0))
            self._last_user, self._last_system, self._last_at = user, system, now
        lag = self.lag_monitor.lag_ms if self.lag_monitor is not None else 0.0
        return WorkerMetrics(
            memory_rss=rss,
            memory_vms=vms,
            cpu_percent=percent,
            uptime_seconds=now - self._started,
            timestamp_ms=int(time.time() * 1000),
            memory_heap_used=_heap_used(),
            cpu_user_micros=int(user * _MICROS),
            cpu_system_micros=int(system * _MICROS),
            event_loop_lag_ms=lag,
        )
