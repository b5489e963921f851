"""Bounded in-memory stores for what workers and the engine report: spans, logs, metrics and call counters.

Every store has a fixed capacity and evicts the oldest entry first, so a worker that floods telemetry costs a
bounded amount of memory; evictions are counted and reported by ``engine::health::check``. The byte bounds count
what an entry holds in memory (its dicts, lists, strings and numbers, see :meth:`_Ring.sizes`), not the JSON it came
as: many small attributes cost three to five times their JSON, so a bound on JSON bytes held several times itself.

Example:
    >>> logs = LogStore(capacity=2)
    >>> for body in ("a", "b", "c"):
    ...     logs.add({"body": body})
    >>> [entry["body"] for entry in logs.entries()], logs.evicted
    (['b', 'c'], 1)
"""

from __future__ import annotations

import heapq
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import methodcaller
from sys import getsizeof
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "Counters", "LogStore", "MetricStore", "Snapshot", "SpanStore", "value_bytes"]

log = logging.getLogger(__name__)


DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# At most one line per this many seconds about metric entries evicted to make room for new names.
NAMES_LOG_INTERVAL_S = 10.0
# What a store holds per entry besides the entry: its pointer in two deques and its size (an int).
_SLOT_BYTES = 48
# An entry's two timestamps (ints past the cached small ones).
_TIMES_BYTES = 2 * getsizeof(1 << 62)
# The entries' fields that the entries of one frame share (one resource, one scope): charged to the first entry of a
# run of entries holding the same objects.
_SHARED_FIELDS = ("resource", "service_name", "instrumentation_scope_name", "instrumentation_scope_version")
# The type methods, not sys.getsizeof (which looks __sizeof__ up on each call: several times slower); dicts and lists
# carry the collector's header on top.
_str_size, _dict_size, _list_size, _int_size = str.__sizeof__, dict.__sizeof__, list.__sizeof__, int.__sizeof__
_sizeof: Callable[[Any], int] = methodcaller("__sizeof__")
_GC_HEADER = getsizeof([]) - [].__sizeof__()
_EMPTY_LIST = getsizeof([])


@dataclass(frozen=True)
class Snapshot:
    """A store's entries at one moment, oldest first, and the ingest sequence number of the first of them: entry
    ``i`` is number ``first_seq + i`` (a store only appends and drops its oldest, so the numbers of the entries it
    holds follow each other). The numbers are what a list's ``cursor`` holds: positions do not survive a write.

    Example:
        >>> logs = LogStore(capacity=2)
        >>> for body in ("a", "b", "c"):
        ...     logs.add({"body": body})
        >>> snap = logs.snapshot()
        >>> [entry["body"] for entry in snap.entries], snap.first_seq
        (['b', 'c'], 1)
    """

    entries: list[dict[str, Any]]
    first_seq: int
    #: which run of the store the numbers are of (a store made again, by a restart, numbers from 0 again): a cursor
    #: of another run would name entries these are not
    epoch: str = ""
    #: each entry's number, when they do not follow each other (a metric store evicted some for names from the
    #: middle); ``None``: entry ``i`` is number ``first_seq + i``
    seqs: list[int] | None = None

    def seq(self, i: int) -> int:
        """The ingest number of entry ``i``."""
        return self.first_seq + i if self.seqs is None else self.seqs[i]

    @property
    def end_seq(self) -> int:
        """One past the number of the newest entry (``first_seq`` when there is none)."""
        return self.first_seq + len(self.entries) if self.seqs is None or not self.seqs else self.seqs[-1] + 1


def value_bytes(value: Any, keys: bool = True) -> int:
    """Bytes of memory a JSON-like value holds, as :func:`sys.getsizeof` counts them: its dicts and lists with their
    keys (unless ``keys`` is false: the engine's own names, shared by every entry) and items, strings and numbers;
    ``None``, booleans and small ints are the interpreter's own (0).

    Example:
        >>> import sys
        >>> value_bytes(None), value_bytes(7), value_bytes("ab") == sys.getsizeof("ab")
        (0, 0, True)
        >>> value_bytes({"k": [1000]}) == sum(map(sys.getsizeof, ({"k": [1000]}, "k", [1000], 1000)))
        True
    """
    size = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            size += _str_size(item)
        elif kind is dict:
            size += _dict_size(item) + _GC_HEADER
            if keys:
                extend(item)
            extend(item.values())
        elif kind is list:
            size += _list_size(item) + _GC_HEADER
            extend(item)
        elif kind is int:
            if not -5 <= item <= 256:  # CPython's cached small ints
                size += _int_size(item)
        elif item is not None and kind is not bool:
            size += getsizeof(item)
    return size


def _attributes_bytes(attributes: Any) -> int:
    """:func:`value_bytes` of a log's attributes, for the usual flat dict of string keys without a Python step per
    attribute (a small int or ``None`` among its values counts as its object's size: a little more than it costs)."""
    if type(attributes) is not dict:
        return value_bytes(attributes)
    values = attributes.values()
    kinds = set(map(type, values))
    try:
        size = _dict_size(attributes) + _GC_HEADER + sum(map(_str_size, attributes))
    except TypeError:  # a key that is not a string
        return value_bytes(attributes)
    if kinds <= {str}:
        return size + sum(map(_str_size, values))
    size += sum(map(_sizeof, values))
    if list in kinds or dict in kinds:
        for value in values:
            if type(value) is list or type(value) is dict:
                size += value_bytes(value) - _sizeof(value)
    return size


def _pairs_bytes(pairs: Any) -> int:
    """:func:`value_bytes` of a span's ``[[key, value], ...]`` attributes, without a Python step per pair."""
    try:
        return ((len(pairs) + 1) * _GC_HEADER + _list_size(pairs) + sum(map(_list_size, pairs))
                + sum(map(_str_size, chain.from_iterable(pairs))))
    except TypeError:  # not a list of lists of strings
        return value_bytes(pairs)


def _shared_bytes(entry: dict[str, Any], last: list[Any]) -> int:
    """What ``entry``'s :data:`_SHARED_FIELDS` hold where they are not the objects of the entry before it (``last``,
    updated)."""
    size = 0
    for i, key in enumerate(_SHARED_FIELDS):
        value = entry.get(key)
        if value is not last[i]:
            last[i] = value
            size += value_bytes(value)
    return size


class _Ring:
    """A FIFO of at most ``capacity`` entries and ``max_bytes`` (as :meth:`sizes` estimates them, or as given) that
    counts what it evicts; the newest entry is always kept, so one entry may exceed ``max_bytes`` (the frame bound
    caps it)."""

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
        #: the ingest sequence number the next entry gets (never reused, not even after :meth:`clear`)
        self.next_seq = 0
        #: this run of the store (:attr:`Snapshot.epoch`)
        self.epoch = secrets.token_hex(4)
        # the shared fields (_SHARED_FIELDS) of the entry sized last: an entry holding the same objects is not
        # charged for them again
        self._last: list[Any] = [None] * len(_SHARED_FIELDS)

    def __len__(self) -> int:
        return len(self._items)

    def sizes(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        """The bytes each of ``entries`` costs the store (:func:`value_bytes` of it; the stores of one shape count
        faster)."""
        return [_SLOT_BYTES + value_bytes(entry) for entry in entries]

    def add(self, entry: dict[str, Any], size: int | None = None) -> None:
        """Append ``entry`` (``size`` bytes; by default :meth:`sizes`), evicting the oldest ones past either bound."""
        if size is None:
            size = self.sizes([entry])[0]
        self._items.append(entry)
        self._sizes.append(size)
        self.bytes += size
        self.next_seq += 1
        self._evict()

    def add_all(self, entries: Sequence[dict[str, Any]], sizes: Sequence[int] | int | None = None) -> None:
        """:meth:`add` of each of ``entries`` in turn (``sizes`` bytes each: one number for all, or one per entry;
        by default :meth:`sizes`), in one step: the same entries kept and the same count evicted (an entry any later
        one pushes out is pushed out by the last one as well, the sizes being at least 0), without a Python-level
        call per entry (a frame brings up to 512 spans).

        Example:
            >>> ring = SpanStore(2)
            >>> ring.add_all([{"n": 1}, {"n": 2}, {"n": 3}], 10)
            >>> ring.entries(), ring.bytes, ring.evicted
            ([{'n': 2}, {'n': 3}], 20, 1)
        """
        if sizes is None:
            sizes = self.sizes(entries)
        elif isinstance(sizes, int):
            sizes = list(repeat(sizes, len(entries)))
        self._items.extend(entries)
        self._sizes.extend(sizes)
        self.bytes += sum(sizes)
        self.next_seq += len(entries)
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

    def snapshot(self) -> Snapshot:
        """:meth:`entries` with the ingest sequence number of the first."""
        return Snapshot(list(self._items), self.next_seq - len(self._items), self.epoch)

    def clear(self) -> None:
        """Drop everything."""
        self._items.clear()
        self._sizes.clear()
        self.bytes = 0
        self._last[:] = [None] * len(_SHARED_FIELDS)


class LogStore(_Ring):
    """StoredLog entries (production keeps 1000)."""

    def sizes(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        """What each StoredLog costs: its dict, strings, timestamps and attributes, and its resource and scope unless
        the entry sized before it holds the same objects (within 1.5x of what tracemalloc measures).

        Example:
            >>> entry = {"body": "x" * 1000, "attributes": {"user": "u" * 1000}, "resource": {"service.name": "a"}}
            >>> first, second = LogStore(10).sizes([entry, {**entry, "body": "y" * 1000}])
            >>> 2000 < second < first < 3000
            True
        """
        last = self._last
        out = []
        for entry in entries:
            size = (_SLOT_BYTES + _TIMES_BYTES + _dict_size(entry) + _GC_HEADER
                    + _attributes_bytes(entry.get("attributes")))
            for key in ("body", "severity_text", "trace_id", "span_id"):
                value = entry.get(key)
                if type(value) is str:
                    size += _str_size(value)
                elif value is not None:
                    size += value_bytes(value)
            out.append(size + _shared_bytes(entry, last))
        return out


class SpanStore(_Ring):
    """StoredSpan entries (capacity ``memory_max_spans``, 1000 by default)."""

    def sizes(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        """What each StoredSpan costs: its dict, ids, name, times, attributes, events and links, and its service and
        scope unless the span sized before it holds the same objects; a span without attributes, events or links
        (every handled call's) without a Python-level call.

        Example:
            >>> span = {"trace_id": "a" * 32, "span_id": "b" * 16, "name": "work", "attributes": [["k", "v"]],
            ...         "events": [], "links": []}
            >>> 400 < SpanStore(10).sizes([span])[0] < 1200
            True
        """
        last = self._last
        last_service, last_scope, last_version = last[1:]
        out = []
        for span in entries:
            size = _SLOT_BYTES + _TIMES_BYTES + _dict_size(span) + _GC_HEADER
            parent = span.get("parent_span_id")
            try:  # the usual span: its ids and name strings (unrolled: a call's span is the engine's hot path)
                size += _str_size(span["trace_id"]) + _str_size(span["span_id"]) + _str_size(span["name"])
                if parent is not None:
                    size += _str_size(parent)
            except (KeyError, TypeError):
                size += value_bytes([span.get("trace_id"), span.get("span_id"), span.get("name"), parent])
            if "status_description" in span:
                size += value_bytes(span["status_description"])
            attributes = span.get("attributes")
            if attributes:
                size += _pairs_bytes(attributes)
            elif attributes is not None:
                size += _EMPTY_LIST
            for key in ("events", "links"):
                value = span.get(key)
                if value:
                    size += value_bytes(value, keys=False)
                elif value is not None:
                    size += _EMPTY_LIST
            # inline, not _shared_bytes: no Python-level call per span
            service, scope, version = (span.get("service_name"), span.get("instrumentation_scope_name"),
                                       span.get("instrumentation_scope_version"))
            if service is not last_service:
                last_service = service
                size += value_bytes(service)
            if scope is not last_scope:
                last_scope = scope
                size += value_bytes(scope)
            if version is not last_version:
                last_version = version
                size += value_bytes(version)
            out.append(size)
        last[1:] = last_service, last_scope, last_version
        return out

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored span of one trace."""
        return [span for span in self._items if span["trace_id"] == trace_id]


class _Held:
    """A stored metric with its size and ingest number; ``alive`` turns false when a new name evicts it from the
    middle of the store (the store drops it once it is the oldest)."""

    __slots__ = ("alive", "metric", "owner", "seq", "size")

    def __init__(self, metric: dict[str, Any], size: int, seq: int, owner: str) -> None:
        self.metric, self.size, self.seq, self.alive, self.owner = metric, size, seq, True, owner


class MetricStore:
    """StoredMetric entries keyed by ingestion time: at most ``max_entries`` entries and ``max_names`` names,
    none older than ``retention_s`` after :meth:`prune`. A new name past ``max_names`` evicts the oldest entries of
    the service (``service_name``) holding the most names until a name is gone.

    Example:
        >>> store = MetricStore(max_entries=10, max_names=2)
        >>> store.add([{"name": n, "service_name": "flood", "timestamp_unix_nano": 1} for n in ("a", "b")])
        >>> store.add([{"name": "jobs", "service_name": "app", "timestamp_unix_nano": 1}])
        >>> [m["name"] for m in store.entries()], store.evicted_for_names
        (['b', 'jobs'], 1)
        >>> store.add([{"name": "c", "service_name": "flood", "timestamp_unix_nano": 1}])
        >>> [m["name"] for m in store.entries()], store.snapshot().seqs
        (['jobs', 'c'], None)
    """

    def __init__(self, *, max_entries: int = 10_000, max_names: int = 10_000, retention_s: float = 3600.0,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_names = max_names
        self.max_bytes = max_bytes
        self.retention_ns = int(retention_s * 1e9)
        # oldest first; the oldest is always alive, evicted ones behind it wait there until it goes
        self._held: deque[_Held] = deque()
        self._alive = 0
        self._dead = 0
        self.bytes = 0
        self._names: OrderedDict[str, int] = OrderedDict()  # name -> entries held
        # Before, a new name evicted the oldest entries whoever sent them: 3 frames of 10,000 made-up names from one
        # worker evicted every other worker's metrics. Each service's own entries (oldest first) and names, and a
        # heap of (-names held, its oldest entry's number, service) to find the service holding the most (of those,
        # the one with the oldest entry), stale items skipped when on top.
        self._service_held: dict[str, deque[_Held]] = {}
        self._service_names: dict[str, dict[str, int]] = {}
        self._most: list[tuple[int, int, str]] = []
        self._last: list[Any] = [None] * len(_SHARED_FIELDS)  # as _Ring's
        self.evicted = 0
        self.refused_names = 0  # only with max_names 0: any name past the bound evicts the oldest
        self.evicted_for_names = 0
        self._names_logged_at = -NAMES_LOG_INTERVAL_S
        self._names_logged = 0  # evicted_for_names at the last line
        #: the ingest sequence number the next stored entry gets (as :attr:`_Ring.next_seq`)
        self.next_seq = 0
        self.epoch = secrets.token_hex(4)  # (as _Ring.epoch)

    def __len__(self) -> int:
        return self._alive

    def add(self, metrics: Iterable[dict[str, Any]], size_each: int | None = None, owner: str | None = None) -> None:
        """Store metrics (``size_each`` bytes each; by default what each costs in memory, see :meth:`size`),
        evicting the oldest entries beyond ``max_entries`` or ``max_bytes``, and for a new name past ``max_names``
        the oldest entries of the owner holding the most names until a name is gone (counted in
        ``evicted_for_names``, logged at most every :data:`NAMES_LOG_INTERVAL_S`). The owner is ``owner`` (the
        sending worker connection), else each entry's ``service_name``."""
        for metric in metrics:
            name = metric["name"]
            if name not in self._names and len(self._names) >= self.max_names:
                # Evicted, not refused: refusing let one frame of 10,000 made-up names keep every other worker's
                # new metric out until the squatter's entries aged out of the retention (an hour).
                while self._alive and len(self._names) >= self.max_names:
                    self._evict_of(self._holding_most())
                    self.evicted += 1
                    self.evicted_for_names += 1
                if len(self._names) >= self.max_names:
                    self.refused_names += 1
                    continue
            size = self.size(metric, self._last) if size_each is None else size_each
            # whose names these are: the sending connection's when known (``owner``), else the service's the entry
            # names (the engine's own metrics; and a store used alone)
            service = f"\0{owner}" if owner is not None else str(metric.get("service_name"))
            held = _Held(metric, size, self.next_seq, service)
            self._names[name] = self._names.get(name, 0) + 1
            self._service_held.setdefault(service, deque()).append(held)
            names = self._service_names.setdefault(service, {})
            names[name] = names.get(name, 0) + 1
            if names[name] == 1:
                self._push_most(service)  # one name more; a new service's oldest entry too
            self._held.append(held)
            self._alive += 1
            self.bytes += size
            self.next_seq += 1
            while self._alive > self.max_entries or (self.bytes > self.max_bytes and self._alive > 1):
                self._pop_oldest()
                self.evicted += 1
        if self.evicted_for_names != self._names_logged:
            now = time.monotonic()
            if now - self._names_logged_at >= NAMES_LOG_INTERVAL_S:
                log.warning("metrics: %d entries of the services holding the most names evicted to store new names "
                            "past max_names (%d) since the last such line; %d so far",
                            self.evicted_for_names - self._names_logged, self.max_names, self.evicted_for_names)
                self._names_logged_at = now
                self._names_logged = self.evicted_for_names

    @staticmethod
    def size(metric: dict[str, Any], last: list[Any] | None = None) -> int:
        """What a StoredMetric costs: its dict, strings and data points, and the service and scope it shares with
        the metric before it (whose shared fields ``last`` holds, updated) only if that one holds other objects.

        Example:
            >>> metric = {"name": "jobs", "data_points": [{"value": 1.5, "attributes": [["k", "v"]]}]}
            >>> 400 < MetricStore.size(metric) < 1200
            True
        """
        return (_SLOT_BYTES + _dict_size(metric) + _GC_HEADER
                + value_bytes([metric.get("name"), metric.get("description"), metric.get("unit")])
                + value_bytes(metric.get("data_points"), keys=False)
                + _shared_bytes(metric, [None] * len(_SHARED_FIELDS) if last is None else last))

    def _push_most(self, service: str) -> None:
        held = self._service_held.get(service)
        if held:
            heapq.heappush(self._most, (-len(self._service_names[service]), held[0].seq, service))
        if len(self._most) > 4 * len(self._service_held) + 64:  # stale items: rebuilt, amortised over the pushes
            self._most = [(-len(self._service_names[svc]), kept[0].seq, svc)
                          for svc, kept in self._service_held.items()]
            heapq.heapify(self._most)

    def _holding_most(self) -> str:
        while True:
            count, oldest, service = self._most[0]
            held = self._service_held.get(service)
            if held and held[0].seq == oldest and len(self._service_names[service]) == -count:
                return service
            heapq.heappop(self._most)

    def _evict_of(self, service: str) -> None:
        held = self._service_held[service][0]
        held.alive = False
        self._dead += 1
        self._forget(held)
        while self._held and not self._held[0].alive:
            self._held.popleft()
            self._dead -= 1
        if self._dead > self._alive + 64:  # behind an old entry of another service they would pile up unbounded
            self._held = deque(kept for kept in self._held if kept.alive)
            self._dead = 0

    def _pop_oldest(self) -> None:
        self._forget(self._held.popleft())
        while self._held and not self._held[0].alive:
            self._held.popleft()
            self._dead -= 1

    def _forget(self, held: _Held) -> None:
        """Takes ``held`` (its service's oldest entry) off the counts; the caller takes it off :attr:`_held`."""
        name, service = held.metric["name"], held.owner
        self._service_held[service].popleft()
        if not self._service_held[service]:
            del self._service_held[service]
        names = self._service_names[service]
        if names[name] > 1:
            names[name] -= 1
        else:
            del names[name]
            if not names:
                del self._service_names[service]
        self._push_most(service)  # its oldest entry is another now
        left = self._names[name] - 1
        if left:
            self._names[name] = left
        else:
            del self._names[name]
        self._alive -= 1
        self.bytes -= held.size

    def prune(self, now_ns: int) -> None:
        """Drop entries older than the retention."""
        while self._held and self._held[0].metric["timestamp_unix_nano"] < now_ns - self.retention_ns:
            self._pop_oldest()

    def entries(self) -> list[dict[str, Any]]:
        """Oldest ingestion first."""
        if not self._dead:
            return [held.metric for held in self._held]
        return [held.metric for held in self._held if held.alive]

    def snapshot(self) -> Snapshot:
        """:meth:`entries` with the ingest sequence number of the first (and of each, when some were evicted from
        the middle for names)."""
        held = self._held
        # numbered without gaps only while no entry left from the middle (a compaction drops the dead ones, not
        # their gaps: read as gapless, the entries after one were numbered too high and a cursor skipped them)
        if not self._dead and (not held or held[-1].seq - held[0].seq + 1 == len(held)):
            return Snapshot(self.entries(), self.next_seq - self._alive, self.epoch)
        alive = [entry for entry in held if entry.alive]
        return Snapshot([held.metric for held in alive], alive[0].seq if alive else self.next_seq, self.epoch,
                        [held.seq for held in alive])

    def clear(self) -> None:
        """Drop everything."""
        self._held.clear()
        self._alive = self._dead = 0
        self._service_held.clear()
        self._service_names.clear()
        self._most.clear()
        self._names.clear()
        self.bytes = 0
        self._last[:] = [None] * len(_SHARED_FIELDS)


@dataclass
class WorkerCounts:
    """Worker connections as ``engine_metrics.workers`` counts them: ``spawns`` made, ``deaths`` ended, ``active``
    open (this engine starts no worker processes: a connection is a worker's life). They read 0, 0, 0 whatever
    was connected before.

    Example:
        >>> w = WorkerCounts()
        >>> w.event("worker_connected"), w.event("worker_connected"), w.event("worker_disconnected")
        (None, None, None)
        >>> w.as_dict()
        {'spawns': 2, 'deaths': 1, 'active': 1}
    """

    spawns: int = 0
    deaths: int = 0

    def event(self, event: str, worker_id: str = "") -> None:
        """One worker event (an engine worker listener's)."""
        if event == "worker_connected":
            self.spawns += 1
        elif event == "worker_disconnected":
            self.deaths += 1

    def as_dict(self) -> dict[str, int]:
        """The ``engine_metrics.workers`` shape."""
        return {"spawns": self.spawns, "deaths": self.deaths, "active": self.spawns - self.deaths}


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
