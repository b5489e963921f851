"""Bounded in-memory stores for what workers and the engine report: spans, logs, metrics and call counters.

Every store has a fixed capacity and evicts the oldest entry first, so a worker that floods telemetry costs a
bounded amount of memory; evictions are counted and reported by ``engine::health::check``.

Example:
    >>> logs = LogStore(capacity=2)
    >>> for body in ("a", "b", "c"):
    ...     logs.add({"body": body})
    >>> [entry["body"] for entry in logs.entries()], logs.evicted
    (['b', 'c'], 1)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "Counters", "LogStore", "MetricStore", "SpanStore"]


DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class _Ring:
    """A FIFO of at most ``capacity`` entries and ``max_bytes`` (as reported by :meth:`add`) that counts what it
    evicts; the newest entry is always kept, so one entry may exceed ``max_bytes`` (the frame bound caps it)."""

    def __init__(self, capacity: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: deque[dict[str, Any]] = deque()
        self._sizes: deque[int] = deque()
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, entry: dict[str, Any], size: int = 0) -> None:
        """Append ``entry`` (about ``size`` bytes of JSON), evicting the oldest ones past either bound."""
        self._items.append(entry)
        self._sizes.append(size)
        self.bytes += size
        self._evict()

    def add_all(self, entries: Sequence[dict[str, Any]], size_each: int = 0) -> None:
        """:meth:`add` of each of ``entries`` in turn (about ``size_each`` bytes each), in one step: the same entries
        kept and the same count evicted (an entry any later one pushes out is pushed out by the last one as well, the
        sizes being at least 0), without a Python-level call per entry (a frame brings up to 512 spans).

        Example:
            >>> ring = SpanStore(2)
            >>> ring.add_all([{"n": 1}, {"n": 2}, {"n": 3}], 10)
            >>> ring.entries(), ring.bytes, ring.evicted
            ([{'n': 2}, {'n': 3}], 20, 1)
        """
        self._items.extend(entries)
        self._sizes.extend(repeat(size_each, len(entries)))
        self.bytes += size_each * len(entries)
        self._evict()

    def _evict(self) -> None:
        # A count alone let 1000 entries of 8 MiB each (a worker's largest frame) stay: bytes bound the store too.
        while len(self._items) > self.capacity or (self.bytes > self.max_bytes and len(self._items) > 1):
            self._items.popleft()
            self.bytes -= self._sizes.popleft()
            self.evicted += 1

    def entries(self) -> list[dict[str, Any]]:
        """Oldest first."""
        return list(self._items)

    def clear(self) -> None:
        """Drop everything."""
        self._items.clear()
        self._sizes.clear()
        self.bytes = 0


class LogStore(_Ring):
    """StoredLog entries (production keeps 1000)."""


class SpanStore(_Ring):
    """StoredSpan entries (capacity ``memory_max_spans``, 1000 by default)."""

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored span of one trace."""
        return [span for span in self._items if span["trace_id"] == trace_id]


class MetricStore:
    """StoredMetric entries keyed by ingestion time: at most ``max_entries`` entries and ``max_names`` names,
    none older than ``retention_s`` after :meth:`prune`.

    Example:
        >>> store = MetricStore(max_entries=10, max_names=1)
        >>> store.add([{"name": "a", "timestamp_unix_nano": 1}, {"name": "b", "timestamp_unix_nano": 1}])
        >>> len(store), store.refused_names
        (1, 1)
    """

    def __init__(self, *, max_entries: int = 10_000, max_names: int = 10_000, retention_s: float = 3600.0,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_names = max_names
        self.max_bytes = max_bytes
        self.retention_ns = int(retention_s * 1e9)
        self._entries: deque[dict[str, Any]] = deque()
        self._sizes: deque[int] = deque()
        self.bytes = 0
        self._names: OrderedDict[str, int] = OrderedDict()  # name -> entries held
        self.evicted = 0
        self.refused_names = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, metrics: Iterable[dict[str, Any]], size_each: int = 0) -> None:
        """Store metrics (about ``size_each`` bytes of JSON each), evicting the oldest entries beyond
        ``max_entries`` or ``max_bytes``; new names past ``max_names`` are refused (counted)."""
        for metric in metrics:
            name = metric["name"]
            if name not in self._names and len(self._names) >= self.max_names:
                self.refused_names += 1
                continue
            self._names[name] = self._names.get(name, 0) + 1
            self._entries.append(metric)
            self._sizes.append(size_each)
            self.bytes += size_each
            while len(self._entries) > self.max_entries or (self.bytes > self.max_bytes and len(self._entries) > 1):
                self._pop_oldest()
                self.evicted += 1

    def _pop_oldest(self) -> None:
        self._forget(self._entries.popleft())
        self.bytes -= self._sizes.popleft()

    def _forget(self, metric: dict[str, Any]) -> None:
        left = self._names[metric["name"]] - 1
        if left:
            self._names[metric["name"]] = left
        else:
            del self._names[metric["name"]]

    def prune(self, now_ns: int) -> None:
        """Drop entries older than the retention."""
        while self._entries and self._entries[0]["timestamp_unix_nano"] < now_ns - self.retention_ns:
            self._pop_oldest()

    def entries(self) -> list[dict[str, Any]]:
        """Oldest ingestion first."""
        return list(self._entries)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
        self._sizes.clear()
        self._names.clear()
        self.bytes = 0


@dataclass
class Counters:
    """Cumulative counts of function executions through the engine.

    Example:
        >>> c = Counters()
        >>> c.count("math::add", "success")
        >>> c.as_dict()["by_function"]
        {'math::add': 1}
    """

    total: int = 0
    success: int = 0
    error: int = 0
    deferred: int = 0
    by_function: dict[str, int] = field(default_factory=dict)
    max_functions: int = 10_000

    def count(self, function_id: str, outcome: str) -> None:
        """One execution of ``function_id`` ending in ``outcome`` (``success``, ``error`` or ``deferred``)."""
        self.total += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if function_id in self.by_function or len(self.by_function) < self.max_functions:
            self.by_function[function_id] = self.by_function.get(function_id, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The ``engine_metrics.invocations`` shape."""
        return {"total": self.total, "success": self.success, "error": self.error, "deferred": self.deferred,
                "by_function": dict(self.by_function)}
