"""``python -m bench.chaos.engine_probe [iii-engine arguments]``: ``iii-engine`` with a measuring probe, for the
fuzz scenario.

The probe runs inside the engine's event loop: a timer every :data:`TICK_S` records how late it fired (the
engine's *loop lag*: a stalled loop, or a process the OS did not run). On ``SIGUSR1`` it prints one line
``chaos-probe {json}`` on stdout with the lag percentiles, the process's CPU seconds and RSS since the previous
mark, and starts a new period. With ``III_CHAOS_TRACEMALLOC=1`` (diagnosis only: it slows every allocation) each
line also lists the Python allocations that grew most since the first mark; with ``III_CHAOS_MALLOC_TRIM=1`` the
line also says how much RSS glibc's ``malloc_trim(0)`` gives back (memory freed by Python but kept by the C
allocator); with ``III_CHAOS_GC=1`` how much a full ``gc.collect()`` frees (garbage held only by reference cycles);
with ``III_CHAOS_ALLOC=1`` where the C heap's memory is (glibc's ``mallinfo2``: in use, free, mmap'd), how many
pymalloc arenas are held and how much of them is in use, and how many threads run.

Example:
    >>> p = Period()
    >>> p.lags_ms.extend([1.0, 2.0, 50.0])
    >>> p.summary()["lag_max_ms"]
    50.0
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import signal
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

from .common import MIB, percentile, rss_bytes

TICK_S = 0.005
PREFIX = "chaos-probe "
_TOP = 12


@dataclass
class Period:
    """Loop lags (ms) measured since the last mark."""

    lags_ms: list[float] = field(default_factory=list)
    cpu_start: float = field(default_factory=lambda: _cpu_seconds())
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        """Percentiles of the lags, CPU seconds used and wall seconds of the period."""
        lags = self.lags_ms
        return {"ticks": len(lags), "lag_p50_ms": round(percentile(lags, 50), 2),
                "lag_p99_ms": round(percentile(lags, 99), 2), "lag_max_ms": round(max(lags, default=0.0), 1),
                "lag_over_50ms": sum(1 for x in lags if x > 50), "cpu_s": round(_cpu_seconds() - self.cpu_start, 3),
                "wall_s": round(time.monotonic() - self.started, 3)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Probe:
    """The lag timer and the ``SIGUSR1`` report, installed on the engine's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.period = Period()
        self.baseline: tracemalloc.Snapshot | None = None
        self._due = loop.time() + TICK_S
        loop.call_at(self._due, self._tick)
        loop.add_signal_handler(signal.SIGUSR1, self.mark)

    def _tick(self) -> None:
        now = self.loop.time()
        self.period.lags_ms.append(max(0.0, (now - self._due) * 1000))
        self._due = now + TICK_S
        self.loop.call_at(self._due, self._tick)

    def mark(self) -> None:
        """Print the period's figures and start a new period."""
        out: dict[str, Any] = self.period.summary()
        out["rss_mib"] = round(rss_bytes(os.getpid()) / MIB, 2)
        out["rss_by_mapping_mib"] = rss_by_mapping()
        if os.environ.get("III_CHAOS_GC") == "1":
            import gc

            before = rss_bytes(os.getpid())
            out["gc_collected"] = gc.collect()
            out["gc_freed_mib"] = round((before - rss_bytes(os.getpid())) / MIB, 2)
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot()
            out["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / MIB, 2)
            if self.baseline is None:
                self.baseline = snapshot
            else:
                stats = snapshot.compare_to(self.baseline, "lineno")[:_TOP]
                out["grew"] = [f"{s.size_diff / 1024:+.0f} KiB {s.count_diff:+d} blocks {s.traceback}"
                               for s in stats]
        if os.environ.get("III_CHAOS_MALLOC_TRIM") == "1":
            before = rss_bytes(os.getpid())
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            out["malloc_trim_freed_mib"] = round((before - rss_bytes(os.getpid())) / MIB, 2)
        if os.environ.get("III_CHAOS_ALLOC") == "1":
            out["alloc"] = allocation_figures()
        print(PREFIX + json.dumps(out), flush=True)
        self.period = Period()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def allocation_figures() -> dict[str, float]:
    """MiB in glibc's arenas (in use / free), in its mmap'd blocks, in pymalloc's arenas (held / in use), and the
    thread count; the glibc figures are left out on other C libraries."""
    import threading

    out: dict[str, float] = {"threads": threading.active_count()}
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        mallinfo2 = None
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        out.update(glibc_in_use_mib=round(info.uordblks / MIB, 2), glibc_free_mib=round(info.fordblks / MIB, 2),
                   glibc_mmap_mib=round(info.hblkhd / MIB, 2))
    stats = _pymalloc_stats()
    for key, name in (("# arenas allocated current", "pymalloc_arenas"),
                      ("# bytes in allocated blocks", "pymalloc_in_use_mib")):
        if key in stats:
            out[name] = stats[key] if name == "pymalloc_arenas" else round(stats[key] / MIB, 2)
    return out


def _pymalloc_stats() -> dict[str, int]:
    """The ``# name = value`` lines of ``sys._debugmallocstats()`` (which writes to the C ``stderr``)."""
    import tempfile

    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if line.startswith("#") and value.strip().replace(",", "").isdigit():
            stats[name.strip()] = int(value.strip().replace(",", ""))
    return stats


def rss_by_mapping(path: str = "/proc/self/smaps") -> dict[str, float]:
    """Resident MiB per kind of mapping: ``[heap]`` (glibc's main arena), ``anon`` (pymalloc arenas, other malloc
    arenas, thread stacks, big mmap'd blocks), ``file`` (code and data of loaded libraries), ``other``.

    Example:
        >>> sorted(rss_by_mapping())[:2]
        ['[heap]', 'anon']
    """
    totals = {"[heap]": 0, "anon": 0, "file": 0, "other": 0}
    kind = "other"
    try:
        with open(path) as smaps:
            for line in smaps:
                first = line.split(maxsplit=6)
                if len(first) >= 5 and "-" in first[0] and not first[0].endswith(":"):
                    name = first[5].strip() if len(first) > 5 else ""
                    kind = "[heap]" if name == "[heap]" else "anon" if not name else \
                        "file" if name.startswith("/") else "other"
                elif first and first[0] == "Rss:":
                    totals[kind] += int(first[1])
    except OSError:
        return {}
    return {k: round(v / 1024, 2) for k, v in totals.items()}


class _ProbePolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_soon(Probe, loop)
        return loop


def main(argv: list[str]) -> int:
    """Run ``iii-engine`` with ``argv`` and the probe in its event loop."""
    if os.environ.get("III_CHAOS_TRACEMALLOC") == "1":
        tracemalloc.start(8)
    asyncio.set_event_loop_policy(_ProbePolicy())
    from iii_engine.cli import main as engine_main

    return engine_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
