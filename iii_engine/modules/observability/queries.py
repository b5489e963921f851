"""The filters, sorting, paging, aggregation and answer encoding behind ``engine::logs::list``,
``engine::traces::*`` and ``engine::metrics::list``. Functions over stored entries (the ``async`` ones only add
pauses for the event loop); times in inputs are epoch milliseconds, stored times are nanoseconds.

A list answer holds at most ``limit`` entries (:data:`DEFAULT_LIMIT` when not given, never more than
:data:`MAX_LIMIT`) and at most a byte budget of JSON (:func:`encode_entries`: the engine's ``max_message_size``):
past it the answer holds fewer entries, says ``truncated: true`` and where the next page starts: ``next_offset``, a
position that shifts as entries come and go, and ``next_cursor`` (:class:`Cursor`: the sort key and ingest number of
the last entry passed), which does not.

Example:
    >>> logs = [{"timestamp_unix_nano": 1, "severity_number": 9, "severity_text": "INFO", "trace_id": None,
    ...          "span_id": None}, {"timestamp_unix_nano": 2, "severity_number": 17, "severity_text": "ERROR",
    ...          "trace_id": None, "span_id": None}]
    >>> out = list_logs(logs, {"severity_min": 13})
    >>> [e["severity_text"] for e in out["logs"]], out["total"]
    (['ERROR'], 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import re
import time
from collections.abc import Callable, Container, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, compress, islice
from operator import itemgetter
from typing import Any, TypeVar

from iii.wire import dumps

from ...invocations import CALLER_KEY
from ...workers import frame_bytes
from ..base import EncodedResult, EngineError
from .stores import Snapshot

__all__ = ["DEFAULT_LIMIT", "DISTRIBUTIONS", "ENGINE_KEYS", "LEVEL_NAMES", "LOGS_KEYS", "LOGS_ORDER",
           "MAX_ATTRIBUTE_FILTERS", "MAX_LIMIT", "METRICS_KEYS", "METRICS_ORDER", "SEVERITY_LEVELS",
           "TRACES_DEFAULT_LIMIT", "TRACES_KEYS", "TREE_MAX_DEPTH", "TREE_SLICE_S", "Cursor", "Encoded", "LogsQuery",
           "Order", "Page", "Paging", "TracesQuery", "adopted_roots", "aggregate", "answer_json", "building_tree",
           "check_keys", "encode_entries", "encode_tree", "list_logs", "list_traces", "logs_query", "mean", "page_of",
           "paging", "percentile", "point_value", "run_sliced", "select", "select_indices", "severity_level",
           "severity_of", "severity_range", "sorted_page", "total", "trace_tree", "trace_tree_async", "traces_query"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)
_MS = 1_000_000
MAX_ATTRIBUTE_FILTERS = 64
#: ``limit`` of ``engine::logs::list`` and ``engine::metrics::list`` when not given (production's log store keeps
#: 1000 entries by default: a default configuration answers as before).
DEFAULT_LIMIT = 1000
#: ``limit`` of ``engine::traces::list`` when not given (production's).
TRACES_DEFAULT_LIMIT = 100
#: The largest ``limit`` honoured (a larger one is taken as this): the whole of a 10,000,000-entry store is never one
#: answer.
MAX_LIMIT = 10_000
# The widest aggregate bucket, in seconds: 2**63 ns.
_MAX_INTERVAL_S = 2.0**63 / 1e9
# Values are summed this much smaller when their sum passes the largest double on the way (exact: a power of two).
_SCALE = 2.0**-64
# Entries filtered, and bytes encoded, between two pauses for the event loop: one query over a large store held the
# engine's loop (and every other worker's calls) for 300-500 ms.
_CHUNK = 2048
_SLICE_BYTES = 256 * 1024
# A cursor's ingest number and integer key.
_SEQ = re.compile(r"[0-9]{1,20}")
_EPOCH = re.compile(r"[0-9a-f]{0,16}")
CURSOR_EXPIRED = "cursor_expired"
"""Error code of a list request whose ``cursor`` is of another run of the store (the engine restarted since)."""
_INT = re.compile(r"-?[0-9]{1,40}")
#: OpenTelemetry's severity levels and the severity numbers each covers (the log data model: TRACE 1-4 ... FATAL
#: 21-24).
SEVERITY_LEVELS: dict[str, tuple[int, int]] = {"trace": (1, 4), "debug": (5, 8), "info": (9, 12), "warn": (13, 16),
                                               "error": (17, 20), "fatal": (21, 24)}
# Other spellings of levels: Python's logging bridged through OpenTelemetry sends its level names as the severity
# text (WARNING 13, CRITICAL 21), and a `level: "WARNING"` trigger used to fire for those records only.
_LEVEL_ALIASES = {"warning": "warn", "critical": "fatal"}
#: The names a ``log`` trigger's ``level`` and ``engine::logs::list``'s ``severity_text`` take, in any case.
LEVEL_NAMES: tuple[str, ...] = (*SEVERITY_LEVELS, *_LEVEL_ALIASES)
# A severity text: a level name and OpenTelemetry's short names' suffix (ERROR2 is severity number 18).
_SEVERITY_TEXT = re.compile(r"([a-z]+)([2-4]?)")


def _field(data: dict[str, Any], key: str, kinds: tuple[type, ...], function_id: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: {key} must be {names}")
    return value


def severity_level(name: str) -> str | None:
    """The level ``name`` names, in any case (``WARNING`` is ``warn``, ``CRITICAL`` is ``fatal``); ``None`` for any
    other text.

    Example:
        >>> severity_level("WARNING"), severity_level("Error"), severity_level("notice")
        ('warn', 'error', None)
    """
    lowered = name.strip().lower()
    level = _LEVEL_ALIASES.get(lowered, lowered)
    return level if level in SEVERITY_LEVELS else None


def severity_of(number: Any, text: Any) -> int | None:
    """A log entry's severity number: ``number`` when it is one (1 to 24), else the one its severity ``text`` names
    (``ERROR`` 17, ``ERROR2`` 18, ``WARNING`` 13, ``CRITICAL`` 21, any case); ``None`` when neither says.

    Why the number first: a record's text is free (``WARNING``, ``CRITICAL``, ``ERROR2`` or none at all), its number
    is what OpenTelemetry defines, and level filters compared the text alone (an error record of number 17 with no
    text fired no ``level: error`` trigger).

    Example:
        >>> severity_of(17, ""), severity_of(21, "CRITICAL"), severity_of(0, "error2"), severity_of(0, "notice")
        (17, 21, 18, None)
    """
    if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 24:
        return number
    match = _SEVERITY_TEXT.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    level = severity_level(match[1]) if match else None
    if match is None or level is None:
        return None
    return SEVERITY_LEVELS[level][0] + (int(match[2]) - 1 if match[2] else 0)


def severity_range(level: Any, what: str) -> tuple[int, int]:
    """The severity numbers (first, last) the level name ``level`` covers (:data:`SEVERITY_LEVELS`, any case, with
    ``warning`` and ``critical``).

    Raises:
        ValueError: naming ``what`` and the accepted names, for anything else (before, an unknown level matched
            nothing, without a word).

    Example:
        >>> severity_range("WARNING", "level"), severity_range("error", "level")
        ((13, 16), (17, 20))
        >>> severity_range(13, "level")
        Traceback (most recent call last):
        ValueError: level must be one of trace, debug, info, warn, warning, error, fatal, critical (any case), got 13
    """
    found = severity_level(level) if isinstance(level, str) else None
    if found is None:
        raise ValueError(f"{what} must be one of {', '.join(sorted(LEVEL_NAMES, key=_level_order))} (any case), "
                         f"got {level!r}"[:300])
    return SEVERITY_LEVELS[found]


def _level_order(name: str) -> int:
    return SEVERITY_LEVELS[_LEVEL_ALIASES.get(name, name)][0] * 2 + (name in _LEVEL_ALIASES)


#: The keys the engine itself adds to a call's input (``_caller_worker_id``, on every call of a worker): a list takes
#: them whatever it lists. Any other key starting with ``_`` is an unknown key like any other.
ENGINE_KEYS = frozenset({CALLER_KEY})


def check_keys(data: dict[str, Any], known: Iterable[str], function_id: str) -> None:
    """Refuse a request holding a key outside ``known`` and :data:`ENGINE_KEYS` with ``deserialization_error`` naming
    it and the keys taken: before, a misspelt filter (``{"levle": "warn"}``) was dropped and the whole store listed.
    Only the keys the engine stamps pass besides: any key starting with ``_`` passed before, so ``{"_limit": 1}`` was
    dropped without a word.

    Example:
        >>> check_keys({"limit": 5, "_caller_worker_id": "w1"}, ("limit", "severity_text"), "f")
        >>> check_keys({"levle": "warn"}, ("limit", "severity_text"), "f")
        Traceback (most recent call last):
        iii_engine.modules.base.EngineError: deserialization_error: Failed to deserialize input for f: unknown field \
`levle`, expected one of limit, severity_text
        >>> check_keys({"_limit": 1}, ("limit",), "f")
        Traceback (most recent call last):
        iii_engine.modules.base.EngineError: deserialization_error: Failed to deserialize input for f: unknown field \
`_limit`, expected one of limit
    """
    unknown = [key for key in data if key not in known and key not in ENGINE_KEYS]
    if unknown:
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: unknown field `{unknown[0]!s:.100}`, "
                          + (f"expected one of {', '.join(known)}" if known else "it takes no fields"))


def paging(data: dict[str, Any], function_id: str, default_limit: int = DEFAULT_LIMIT) -> tuple[int, int]:
    """``(offset, limit)`` of a list request: ``limit`` is ``default_limit`` when not given, at most
    :data:`MAX_LIMIT`."""
    offset = _field(data, "offset", (int,), function_id)
    limit = _field(data, "limit", (int,), function_id)
    if (offset is not None and offset < 0) or (limit is not None and limit < 0):
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: offset and limit must be >= 0")
    return offset or 0, min(MAX_LIMIT, default_limit if limit is None else limit)


async def select_indices(entries: Sequence[_T], keep: Callable[[_T], bool]) -> list[int]:
    """The indices of the entries ``keep`` keeps, ascending, filtered a chunk at a time with a pause for the event
    loop between."""
    out: list[int] = []
    for start in range(0, len(entries), _CHUNK):
        if start:
            await asyncio.sleep(0)
        chunk = entries[start:start + _CHUNK]
        out.extend(compress(range(start, start + len(chunk)), map(keep, chunk)))
    return out


async def select(entries: Sequence[_T], keep: Callable[[_T], bool]) -> list[_T]:
    """The entries ``keep`` keeps, in order (:func:`select_indices`)."""
    return [entries[i] for i in await select_indices(entries, keep)]


async def sorted_page(items: list[_T], key: Callable[[_T], Any], descending: bool, offset: int,
                      limit: int) -> list[_T]:
    """``sorted(items, key=key, reverse=descending)[offset:offset + limit]`` (stable), with pauses for the event
    loop: chunks are sorted one at a time, then merged only as far as the page ends.

    Example:
        >>> import asyncio
        >>> asyncio.run(sorted_page(list(range(5000)), lambda n: n % 7, True, 2, 3))
        [20, 27, 34]
    """
    if len(items) <= _CHUNK:
        return sorted(items, key=key, reverse=descending)[offset:offset + limit]
    runs = []
    for start in range(0, len(items), _CHUNK):
        if start:
            await asyncio.sleep(0)
        runs.append(sorted(items[start:start + _CHUNK], key=key, reverse=descending))
    merged = heapq.merge(*runs, key=key, reverse=descending)  # ties: the earlier run first, so stable
    out: list[_T] = []
    while len(out) < offset + limit:
        await asyncio.sleep(0)
        taken = len(out)
        out.extend(islice(merged, min(_CHUNK, offset + limit - taken)))
        if len(out) == taken:
            break
    return out[offset:]


@dataclass(frozen=True)
class Cursor:
    """Where a page ended in a list's order: the sort key (``None`` when the order is the ingest order) and the
    ingest sequence number (:class:`~.stores.Snapshot`) of the last entry passed."""

    key: Any
    seq: int
    #: the run of the store its number is of (:attr:`~.stores.Snapshot.epoch`)
    epoch: str = ""


@dataclass(frozen=True)
class Order:
    """A list's order: by ``key`` (``None``: the ingest order alone), descending or not; entries of one key keep
    the ingest order, the newest first when ``ties_newest_first``. ``name`` tags the cursors given in this order:
    a cursor is ``<name>:<seq>.<epoch>:<key>`` (``key_type`` reads the key back), opaque to clients.

    Example:
        >>> order = Order("logs", itemgetter("t"), int, True, True)
        >>> text = order.text(order.cursor({"t": 5}, 12, "ab12"))
        >>> text, order.parse(text, "f")
        ('logs:12.ab12:5', Cursor(key=5, seq=12, epoch='ab12'))
    """

    name: str
    key: Callable[[dict[str, Any]], Any] | None
    key_type: type | None
    descending: bool
    ties_newest_first: bool

    def cursor(self, entry: dict[str, Any], seq: int, epoch: str = "") -> Cursor:
        """The cursor just after ``entry`` (ingest number ``seq`` of the store's run ``epoch``)."""
        return Cursor(None if self.key is None else self.key(entry), seq, epoch)

    def text(self, cursor: Cursor) -> str:
        """``cursor`` as a ``next_cursor``."""
        key = "" if cursor.key is None else repr(cursor.key) if isinstance(cursor.key, float) else str(cursor.key)
        return f"{self.name}:{cursor.seq}.{cursor.epoch}:{key}"

    def parse(self, text: str, function_id: str) -> Cursor:
        """The cursor a ``next_cursor`` of this list in this order names; ``deserialization_error`` for any other
        text (one of another list or order would skip or repeat entries)."""
        name, _, rest = text.partition(":")
        numbered, _, key = rest.partition(":")
        seq, _, epoch = numbered.partition(".")
        if name != self.name or not _SEQ.fullmatch(seq) or not _EPOCH.fullmatch(epoch):
            raise EngineError("deserialization_error",
                              f"Failed to deserialize input for {function_id}: cursor is not a next_cursor this list "
                              f"gave in this order ({self.name})")
        if self.key_type is None and key == "":
            return Cursor(None, int(seq), epoch)
        if self.key_type is int and _INT.fullmatch(key):
            return Cursor(int(key), int(seq), epoch)
        if self.key_type is float:
            with contextlib.suppress(ValueError):
                number = float(key)
                if math.isfinite(number):
                    return Cursor(number, int(seq), epoch)
        if self.key_type is str:
            return Cursor(key, int(seq), epoch)
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: cursor holds no {self.name} sort key")


@dataclass
class Paging:
    """What a list request's page is: the entries' :class:`Order` and where the page starts (``offset`` into the
    entries matching now, or after ``cursor``)."""

    offset: int
    limit: int
    order: Order
    cursor: Cursor | None

    @classmethod
    def parse(cls, data: dict[str, Any], function_id: str, order: Order,
              default_limit: int = DEFAULT_LIMIT) -> Paging:
        """``offset``, ``limit`` (:func:`paging`) and ``cursor`` (a ``next_cursor``, not with ``offset``)."""
        offset, limit = paging(data, function_id, default_limit)
        text = _field(data, "cursor", (str,), function_id)
        if text is not None and data.get("offset") is not None:
            raise EngineError("deserialization_error",
                              f"Failed to deserialize input for {function_id}: give cursor or offset, not both")
        return cls(offset, limit, order, None if text is None else order.parse(text, function_id))


@dataclass
class Page:
    """A list answer's entries (their ingest numbers in :attr:`seqs`), where they start among the :attr:`total`
    entries matching now and the cursor just before them."""

    order: Order
    entries: list[dict[str, Any]]
    seqs: list[int]
    start: int
    total: int
    before: Cursor | None
    epoch: str = ""

    def fields(self, encoded: Encoded) -> dict[str, Any]:
        """The paging fields of the answer holding ``encoded`` (of :attr:`entries`): ``next_offset`` and
        ``next_cursor`` (where the entries not in it start, null when none are left; the cursor stays exact while
        the store changes, the offset does not), ``truncated`` (entries of the page left out for the byte bound),
        ``oversized`` (entries left out because each alone is larger than the bound: passed, so paging never sticks
        on one)."""
        passed = len(self.entries) if encoded.next_index is None else encoded.next_index
        more = self.start + passed < self.total
        last = self.order.cursor(self.entries[passed - 1], self.seqs[passed - 1], self.epoch) if passed else self.before
        return {"next_offset": self.start + passed if more else None,
                "next_cursor": self.order.text(last) if more and last is not None else None,
                "truncated": encoded.truncated, "oversized": encoded.oversized}


async def page_of(snapshot: Snapshot, keep: Callable[[dict[str, Any]], bool], paging: Paging) -> Page:
    """The page ``paging`` names among the entries of ``snapshot`` that ``keep`` keeps, in its order, with pauses
    for the event loop. After a cursor, the page is the entries past it in the order (its key, then its ingest
    number): none still stored is skipped or repeated however many entries came or went since the cursor's page.

    Example:
        >>> import asyncio
        >>> from .stores import Snapshot
        >>> order = Order("x", itemgetter("t"), int, True, True)
        >>> snap = Snapshot([{"t": 1}, {"t": 3}, {"t": 3}, {"t": 2}], first_seq=10, epoch="e1")
        >>> page = asyncio.run(page_of(snap, lambda e: True, Paging(0, 2, order, None)))
        >>> page.seqs, page.fields(Encoded("", 2, 0))["next_cursor"]
        ([12, 11], 'x:11.e1:3')
        >>> asyncio.run(page_of(snap, lambda e: True, Paging(0, 5, order, Cursor(3, 11, "e1")))).seqs
        [13, 10]
        >>> asyncio.run(page_of(snap, lambda e: True, Paging(0, 5, order, Cursor(3, 11, "e0"))))
        Traceback (most recent call last):
        iii_engine.modules.base.EngineError: cursor_expired: this cursor is of another run of the store (the engine ...
    """
    entries, order, seq = snapshot.entries, paging.order, snapshot.seq
    matched = await select_indices(entries, keep)
    if order.ties_newest_first:
        matched.reverse()  # a stable sort keeps it for entries of one key
    key = order.key
    index_key = None if key is None else lambda i: key(entries[i])

    async def sort(indices: list[int], offset: int, limit: int) -> list[int]:
        if index_key is None:  # already in the order
            return indices[offset:offset + limit]
        return await sorted_page(indices, index_key, order.descending, offset, limit)

    before = paging.cursor
    if before is not None:
        if before.epoch != snapshot.epoch or before.seq >= snapshot.end_seq:
            # a cursor of an earlier run (the engine restarted, its numbers start again) named entries that are not
            # these: its walk ended silently, 0 entries and no next_cursor, with 500 stored
            raise EngineError(CURSOR_EXPIRED, "this cursor is of another run of the store (the engine restarted since "
                                              "it was given) or was never given: list again without it")
        mark = before

        def past(i: int) -> bool:
            if index_key is not None:
                value = index_key(i)
                if value != mark.key:
                    return bool(value < mark.key if order.descending else value > mark.key)
            return seq(i) < mark.seq if order.ties_newest_first else seq(i) > mark.seq

        rest = await select(matched, past)
        start = len(matched) - len(rest)
        index = await sort(rest, 0, paging.limit)
    else:
        start = paging.offset
        # with the entry just before the page: an empty page's cursor is after it
        index = await sort(matched, start - 1, paging.limit + 1) if start else await sort(matched, 0, paging.limit)
        if start and index:
            before = order.cursor(entries[index[0]], seq(index[0]), snapshot.epoch)
            index = index[1:]
    return Page(order, [entries[i] for i in index], [seq(i) for i in index], start, len(matched), before,
                snapshot.epoch)


#: ``engine::logs::list``: newest first; of entries of one time, the latest to arrive first.
LOGS_ORDER = Order("logs", itemgetter("timestamp_unix_nano"), int, descending=True, ties_newest_first=True)
#: ``engine::metrics::list``'s ``sdk_metrics``: oldest ingestion first.
METRICS_ORDER = Order("metrics", None, None, descending=False, ties_newest_first=False)
#: The keys ``engine::metrics::list`` takes: production's, and ``offset``, ``limit``, ``cursor``.
METRICS_KEYS = ("start_time", "end_time", "metric_name", "aggregate_interval", "offset", "limit", "cursor")


@dataclass
class LogsQuery(Paging):
    """A parsed ``engine::logs::list`` request: :attr:`keep` is its filter (:data:`LOGS_ORDER`)."""

    keep: Callable[[dict[str, Any]], bool]
    echo: dict[str, Any]


#: The keys ``engine::logs::list`` takes: production's, and ``cursor``.
LOGS_KEYS = ("trace_id", "span_id", "severity_min", "severity_text", "start_time", "end_time", "offset", "limit",
             "cursor")


def logs_query(data: dict[str, Any]) -> LogsQuery:
    """Parse an ``engine::logs::list`` request (ids, severity, time filters; ``offset`` or ``cursor``, ``limit``).
    ``severity_text`` names a level (:func:`severity_range`): it keeps the entries whose severity number is in the
    level's range, or, with no number, whose text names a severity in it (:func:`severity_of`); ``""`` and ``all``
    (any case) filter nothing, as with production (consoles send them for "every level").

    Example:
        >>> logs = [{"timestamp_unix_nano": 1, "severity_number": 17, "severity_text": "", "trace_id": None,
        ...          "span_id": None}, {"timestamp_unix_nano": 2, "severity_number": 0, "severity_text": "WARNING",
        ...          "trace_id": None, "span_id": None}]
        >>> [e["timestamp_unix_nano"] for e in list_logs(logs, {"severity_text": "error"})["logs"]]
        [1]
        >>> list_logs(logs, {"severity_text": "warn"})["total"], list_logs(logs, {"severity_text": "WARNING"})["total"]
        (1, 1)
        >>> list_logs(logs, {"severity_text": ""})["total"], list_logs(logs, {"severity_text": "All"})["total"]
        (2, 2)
    """
    fid = "engine::logs::list"
    check_keys(data, LOGS_KEYS, fid)
    trace_id = _field(data, "trace_id", (str,), fid)
    span_id = _field(data, "span_id", (str,), fid)
    severity_min = _field(data, "severity_min", (int,), fid)
    severity_text = _field(data, "severity_text", (str,), fid)
    low, high = 1, 24
    every_level = severity_text is not None and severity_text.strip().lower() in ("", "all")
    if severity_text is not None and not every_level:
        try:
            low, high = severity_range(severity_text, "severity_text")
        except ValueError as exc:
            raise EngineError("deserialization_error", f"Failed to deserialize input for {fid}: {exc}") from None
    start = _field(data, "start_time", (int, float), fid)
    end = _field(data, "end_time", (int, float), fid)
    where = Paging.parse(data, fid, LOGS_ORDER)

    def keep(e: dict[str, Any]) -> bool:
        return ((trace_id is None or e["trace_id"] == trace_id)
                and (span_id is None or e["span_id"] == span_id)
                and (severity_min is None or e["severity_number"] >= severity_min)
                and (severity_text is None or every_level
                     or low <= (severity_of(e["severity_number"], e["severity_text"]) or 0) <= high)
                and (start is None or e["timestamp_unix_nano"] >= start * _MS)
                and (end is None or e["timestamp_unix_nano"] <= end * _MS))

    echo = {"trace_id": trace_id, "span_id": span_id, "severity_min": severity_min, "severity_text": severity_text,
            "start_time": start, "end_time": end, "offset": data.get("offset"), "limit": data.get("limit"),
            "cursor": data.get("cursor")}
    return LogsQuery(where.offset, where.limit, where.order, where.cursor, keep, echo)


def list_logs(entries: Sequence[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Filter (ids, severity, time), newest first, then page (not from a running event loop)."""
    query = logs_query(data)
    page = asyncio.run(page_of(Snapshot(list(entries), 0), query.keep, query))
    return {"logs": page.entries, "total": page.total, "query": query.echo}


def _attr(span: dict[str, Any], key: str) -> str | None:
    for pair in span.get("attributes", ()):
        if pair[0] == key:
            return str(pair[1])
    return None


def _internal(span: dict[str, Any]) -> bool:
    return _attr(span, "iii.function.kind") == "internal" or (_attr(span, "function_id") or "").startswith("engine::")


def _duration_ms(span: dict[str, Any]) -> float:
    return float(span["end_time_unix_nano"] - span["start_time_unix_nano"]) / _MS


# engine::traces::list's sort_by: the key and its type (a cursor holds the key). Production's names; duration_ms
# and service_name are its newer versions' (any other value used to sort by start_time without a word).
_TRACE_KEYS: dict[str, tuple[Callable[[dict[str, Any]], Any], type]] = {
    "start_time": (itemgetter("start_time_unix_nano"), int), "duration": (_duration_ms, float),
    "name": (itemgetter("name"), str), "service_name": (lambda span: str(span.get("service_name", "")), str)}
_SORT_ALIASES = {"duration_ms": "duration"}
#: The keys ``engine::traces::list`` takes: production's (``trace_ids``, ``exclude_attributes`` and
#: ``attribute_projection`` are its newer versions'), ``span_id`` and ``parent_span_id`` (the published console sends
#: them, production ignores them: see :data:`_IGNORED_KEYS`), and ``cursor``.
TRACES_KEYS = ("trace_id", "trace_ids", "service_name", "name", "status", "search_all_spans", "min_duration_ms",
               "max_duration_ms", "start_time", "end_time", "attributes", "exclude_attributes", "attribute_projection",
               "span_id", "parent_span_id", "include_internal", "sort_by", "sort_order", "offset", "limit", "cursor")
# Keys taken (checked: a list of strings, a string) and not used, and why. span_id and parent_span_id are not filters
# here on purpose: the list holds root spans, whose parent is always null and whose span id the console does not
# know beforehand, so as filters they would list nothing where production (which ignores them) lists the traces.
_IGNORED_KEYS: dict[str, tuple[type, str]] = {
    "attribute_projection": (list, "spans are listed with all their attributes"),
    "span_id": (str, "the list holds root spans; as production, it is not a filter"),
    "parent_span_id": (str, "the list holds root spans; as production, it is not a filter"),
}
# Keys taken and not used, logged once per process (a newer console may send them).
_IGNORED_LOGGED: set[str] = set()


def _attribute_pairs(data: dict[str, Any], key: str, function_id: str) -> set[tuple[str, str]]:
    """The distinct ``[key, value]`` pairs of the filter ``key`` (values that are numbers compare as their text).

    Why refused: an object (``{"key": k, "value": v}``) or a pair without its value was dropped, and the list held
    every trace.

    Example:
        >>> sorted(_attribute_pairs({"a": [["k", "v"], ["k", "v"], ["n", 5]]}, "a", "f"))
        [('k', 'v'), ('n', '5')]
        >>> _attribute_pairs({"a": [{"key": "k", "value": "v"}]}, "a", "f")
        Traceback (most recent call last):
        iii_engine.modules.base.EngineError: deserialization_error: Failed to deserialize input for f: a[0] must be a \
[key, value] pair of strings, got {'key': 'k', 'value': 'v'}
    """
    pairs: set[tuple[str, str]] = set()
    for index, pair in enumerate(_field(data, key, (list,), function_id) or ()):
        if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
                or isinstance(pair[1], bool) or not isinstance(pair[1], str | int | float)):
            raise EngineError("deserialization_error",
                              f"Failed to deserialize input for {function_id}: {key}[{index}] must be a [key, value] "
                              f"pair of strings, got {pair!r:.100}")
        pairs.add((pair[0], str(pair[1])))
    # Capped: each filter is checked against every stored span, and 20,000 copies of one pair used to hold the
    # engine's event loop for 4 s (a 4 MiB request, over a minute).
    if len(pairs) > MAX_ATTRIBUTE_FILTERS:
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: {key} has {len(pairs)} distinct "
                          f"filters, at most {MAX_ATTRIBUTE_FILTERS} allowed")
    return pairs


def _choice(data: dict[str, Any], key: str, choices: Iterable[str], default: str, function_id: str) -> str:
    """``data[key]`` lower-cased, one of ``choices``; ``default`` when absent or ``""`` (what production reads it as,
    and what a console's empty select sends); ``deserialization_error`` naming the key and the choices for anything
    else.

    Example:
        >>> orders = ("asc", "desc")
        >>> _choice({"o": ""}, "o", orders, "asc", "f"), _choice({"o": "DESC"}, "o", orders, "asc", "f")
        ('asc', 'desc')
    """
    value = data.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: {key} must be one of "
                          f"{', '.join(choices)}, got {value!r:.100}")
    return value.lower()


@dataclass
class TracesQuery(Paging):
    """A parsed ``engine::traces::list`` request: :attr:`keep` is its filter of root spans."""

    keep: Callable[[dict[str, Any]], bool]


def traces_query(spans: Sequence[dict[str, Any]], data: dict[str, Any],
                 adopted: Container[int] | None = None) -> TracesQuery:
    """Parse an ``engine::traces::list`` request against the stored ``spans`` (``search_all_spans`` looks at them);
    ``adopted`` is :func:`adopted_roots` of them (found here when not given)."""
    fid = "engine::traces::list"
    if adopted is None:
        adopted = _run(adopted_roots(spans, None))
    check_keys(data, TRACES_KEYS, fid)
    trace_id = _field(data, "trace_id", (str,), fid)
    include_internal = bool(_field(data, "include_internal", (bool,), fid))
    texts = {key: _field(data, key, (str,), fid) for key in ("service_name", "name", "status")}
    search_all = bool(_field(data, "search_all_spans", (bool,), fid))
    min_ms = _field(data, "min_duration_ms", (int, float), fid)
    max_ms = _field(data, "max_duration_ms", (int, float), fid)
    start = _field(data, "start_time", (int, float), fid)
    end = _field(data, "end_time", (int, float), fid)
    wanted_attrs = _attribute_pairs(data, "attributes", fid)
    unwanted_attrs = _attribute_pairs(data, "exclude_attributes", fid)
    trace_ids = _field(data, "trace_ids", (list,), fid)
    if trace_ids is not None and not all(isinstance(one, str) for one in trace_ids):
        raise EngineError("deserialization_error", f"Failed to deserialize input for {fid}: trace_ids must be a list "
                                                   "of strings")
    # as production: trace_ids is not used when trace_id is given
    wanted_traces = None if trace_ids is None or trace_id is not None else set(trace_ids)
    for ignored, (kind, why) in _IGNORED_KEYS.items():
        if _field(data, ignored, (kind,), fid) is not None and ignored not in _IGNORED_LOGGED:
            _IGNORED_LOGGED.add(ignored)  # once per process: a console sends it with every list
            log.info("%s: %s is taken and not used (%s)", fid, ignored, why)
    name = texts["name"]
    traces_with_name: set[str] = set()
    if search_all and name:
        traces_with_name = {s["trace_id"] for s in spans if name.lower() in s["name"].lower()}

    def keep(span: dict[str, Any]) -> bool:
        if span["parent_span_id"] is not None and id(span) not in adopted:
            return False
        if trace_id is not None and span["trace_id"] != trace_id:
            return False
        if wanted_traces is not None and span["trace_id"] not in wanted_traces:
            return False
        if not include_internal and _internal(span):
            return False
        for key in ("service_name", "status"):
            wanted = texts[key]
            if wanted and wanted.lower() not in str(span.get(key, "")).lower():
                return False
        if name:
            if search_all:
                if span["trace_id"] not in traces_with_name:
                    return False
            elif name.lower() not in span["name"].lower():
                return False
        duration = _duration_ms(span)
        if (min_ms is not None and duration < min_ms) or (max_ms is not None and duration > max_ms):
            return False
        if start is not None and span["end_time_unix_nano"] < start * _MS:
            return False
        if end is not None and span["start_time_unix_nano"] > end * _MS:
            return False
        if not wanted_attrs and not unwanted_attrs:
            return True
        held = {str(pair[0]): str(pair[1]) for pair in reversed(span.get("attributes", ()))}  # first one wins
        return (all(held.get(key) == value for key, value in wanted_attrs)
                and not any(held.get(key) == value for key, value in unwanted_attrs))

    # Refused rather than read as the default: "ascending" sorted descending, "durration" by start time.
    descending = _choice(data, "sort_order", ("asc", "desc"), "asc", fid) == "desc"
    sort_by = _choice(data, "sort_by", (*_TRACE_KEYS, *_SORT_ALIASES), "start_time", fid)
    sort_by = _SORT_ALIASES.get(sort_by, sort_by)
    key, key_type = _TRACE_KEYS[sort_by]
    order = Order(f"traces.{sort_by}.{'desc' if descending else 'asc'}", key, key_type, descending, False)
    where = Paging.parse(data, fid, order, TRACES_DEFAULT_LIMIT)
    return TracesQuery(where.offset, where.limit, where.order, where.cursor, keep)


def list_traces(spans: Sequence[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Root spans matching every given filter, sorted and paged (not from a running event loop)."""
    query = traces_query(spans, data)
    page = asyncio.run(page_of(Snapshot(list(spans), 0), query.keep, query))
    return {"spans": page.entries, "total": page.total, "offset": page.start, "limit": query.limit}


#: levels below a root that :func:`trace_tree` nests (the root is level 0); deeper spans are left out
TREE_MAX_DEPTH = 256


def trace_tree(spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"roots": [...], "depth_cut": bool}`` for the spans of one trace; a span whose parent is not stored, that
    is its own parent or that is in a parent cycle is a root too (after the spans with no parent); a span more than
    :data:`TREE_MAX_DEPTH` levels below its root is left out (``depth_cut`` says so). Built in one go (on an event
    loop, :func:`trace_tree_async` lets other work run while it builds).

    Example:
        >>> chain = [{"span_id": str(i), "parent_span_id": str(i - 1) if i else None} for i in range(300)]
        >>> tree = trace_tree(chain)
        >>> tree["depth_cut"], len(trace_tree(chain[:10])["roots"]), trace_tree(chain[:10])["depth_cut"]
        (True, 1, False)
    """
    return _run(building_tree(spans, None))  # the builder trace_tree_async drives, in one go


async def trace_tree_async(spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`trace_tree` on the event loop, which runs other work every :data:`TREE_SLICE_S` of building (a tree
    of 100,000 spans took ~370 ms in one go)."""
    return await run_sliced(building_tree(spans, TREE_SLICE_S))


#: seconds of building a tree (:func:`trace_tree_async`) between two pauses for the event loop
TREE_SLICE_S = 0.005


def building_tree(spans: Sequence[dict[str, Any]], slice_s: float | None) -> Generator[None, None, dict[str, Any]]:
    """Builds :func:`trace_tree`'s answer (its return value), pausing (a ``yield``) each time ``slice_s`` seconds
    of building passed; never when ``slice_s`` is ``None``. Depth first with a stack of its own, not recursion."""
    # A hostile trace may link spans in a cycle or very deep; the depth bound keeps this finite, and placing each
    # stored span once keeps it small: before, three spans sharing their own id as span and parent id made
    # 2**256 nodes, and one engine::traces::tree call held the engine's event loop for good. The bound stays
    # because the answer nests two JSON levels per span: Python's json.loads raises RecursionError on a tree of
    # 500 levels and orjson refuses one of 1,000 (measured), so a deeper answer could not be read.
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["parent_span_id"] is not None:
            children.setdefault(span["parent_span_id"], []).append(span)
    stored = {span["span_id"] for span in spans}
    placed: set[int] = set()
    cut = False
    began = time.perf_counter()

    def enter(span: dict[str, Any], depth: int) -> tuple[dict[str, Any], Iterator[dict[str, Any]], int]:
        nonlocal cut
        placed.add(id(span))
        kids = [kid for kid in children.get(span["span_id"], ()) if id(kid) not in placed]
        if depth >= TREE_MAX_DEPTH:
            # Before, these were dropped and the answer said "truncated": false (a 2,000-span chain: 257 spans)
            cut = cut or bool(kids)
            # Left out with their subtrees, not taken up again as roots by the later passes. Each span is marked
            # when pushed and each span id's children listed once: re-listing them for every popped span took
            # 32 s of CPU for 1,000 spans sharing one span id (each pop pushed every still unplaced span again).
            placed.update(id(kid) for kid in kids)
            listed = {span["span_id"]}
            while kids:
                kid = kids.pop()
                if kid["span_id"] in listed:
                    continue
                listed.add(kid["span_id"])
                for grandkid in children.get(kid["span_id"], ()):
                    if id(grandkid) not in placed:
                        placed.add(id(grandkid))
                        kids.append(grandkid)
        return {**span, "children": []}, iter(kids), depth

    roots: list[dict[str, Any]] = []

    def grow(span: dict[str, Any]) -> Generator[None, None, None]:
        nonlocal began
        top = enter(span, 0)
        roots.append(top[0])
        stack = [top]
        while stack:
            node, kids, depth = stack[-1]
            for kid in kids:
                if id(kid) not in placed:  # a sibling's subtree may have placed it meanwhile
                    child = enter(kid, depth + 1)
                    node["children"].append(child[0])
                    stack.append(child)
                    break
            else:
                stack.pop()
            if slice_s is not None and time.perf_counter() - began >= slice_s:
                yield
                began = time.perf_counter()

    # Spans without a parent first, then those whose parent is not stored, then the first stored span of each parent
    # cycle (a span that is its own parent is one), as engine::traces::list lists them (adopted_roots): before, only
    # the first were roots, and the others were stored and counted but in no answer.
    for span in chain(_parentless(spans), _orphans(spans, stored)):
        if id(span) not in placed:
            yield from grow(span)
    rest = [span for span in spans if id(span) not in placed]
    if rest:
        heads = yield from adopted_roots(rest, slice_s)
        for span in chain((span for span in rest if id(span) in heads), rest):
            if id(span) not in placed:
                yield from grow(span)
    return {"roots": roots, "depth_cut": cut}


def _parentless(spans: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (span for span in spans if span["parent_span_id"] is None)


def _orphans(spans: Iterable[dict[str, Any]], stored: Container[str]) -> Iterator[dict[str, Any]]:
    return (span for span in spans if span["parent_span_id"] is not None and span["parent_span_id"] not in stored)


_ORPHAN: Any = object()


def _trace_and_span(span: dict[str, Any]) -> tuple[Any, str]:
    return span.get("trace_id"), span["span_id"]


def adopted_roots(spans: Sequence[dict[str, Any]], slice_s: float | None) -> Generator[None, None, set[int]]:
    """The ``id()`` of each span :func:`trace_tree` takes as a root though it names a parent (its parent not stored,
    or the first stored span of a parent cycle, a span that is its own parent being one), over the spans of every
    trace, pausing (a ``yield``) each time ``slice_s`` seconds passed: ``engine::traces::list`` lists them with the
    spans that have no parent.

    Example:
        >>> spans = [{"trace_id": "t", "span_id": s, "parent_span_id": p}
        ...          for s, p in (("r", None), ("k", "r"), ("a", "b"), ("b", "a"), ("o", "gone"), ("z", "z"))]
        >>> sorted(span["span_id"] for span in spans if id(span) in _run(adopted_roots(spans, None)))
        ['a', 'o', 'z']
    """
    # Up each span's parent chain once (what a chain ends in is remembered for every span on it), not a walk down
    # from the roots: 100,000 spans took ~1 s that way and ~0.1 s this one, on every list. Spans are known by their
    # span id alone (str keys, several times cheaper than (trace, span) tuples) unless two share one.
    trace_of = {span["span_id"]: span.get("trace_id") for span in spans}  # (trace_tree's doctests have none)
    parent_of: dict[Any, Any]  # span -> its parent's key, None (no parent) or _ORPHAN (parent not stored)
    key_of: Callable[[dict[str, Any]], Any]
    unique = len(trace_of) == len(spans)
    if unique:
        key_of = itemgetter("span_id")
        parent_of = {span["span_id"]: None if (parent := span["parent_span_id"]) is None
                     else parent if trace_of.get(parent, _ORPHAN) == span.get("trace_id") else _ORPHAN
                     for span in spans}
    else:
        key_of = _trace_and_span
        keys = set(map(key_of, spans))
        parent_of = {}
        for span in spans:
            key, parent = key_of(span), span["parent_span_id"]
            if key not in parent_of:  # a span id stored twice in a trace: the first one's parent
                parent_of[key] = (None if parent is None else (key[0], parent) if (key[0], parent) in keys
                                  else _ORPHAN)
    in_cycle: set[Any] = set()
    done: set[Any] = set()
    began = time.perf_counter()
    for start, first in parent_of.items():
        # no cycle through a span whose parent is none, not stored or already walked
        if first is None or first is _ORPHAN or first in done or start in done:
            continue
        path: dict[Any, None] = {}
        at = start
        while at is not None and at is not _ORPHAN and at not in done:
            if at in path:
                in_cycle.update(islice(path, list(path).index(at), None))
                break
            path[at] = None
            at = parent_of[at]
        done.update(path)
        if slice_s is not None and time.perf_counter() - began >= slice_s:
            yield
            began = time.perf_counter()
    adopted: set[int] = set()
    heads: set[Any] = set()  # keys of the cycles given a root
    for span in spans:
        parent = span["parent_span_id"]
        if parent is None:
            continue
        if (trace_of.get(parent, _ORPHAN) != span.get("trace_id") if unique
                else (span.get("trace_id"), parent) not in parent_of):
            adopted.add(id(span))
        elif in_cycle and (key := key_of(span)) in in_cycle and key not in heads:
            adopted.add(id(span))
            at = key  # the first stored span of its cycle: the whole cycle is below it
            while at not in heads:
                heads.add(at)
                at = parent_of[at]
    return adopted


def _run(building: Generator[None, None, _T]) -> _T:
    """What a builder pausing with ``yield`` returns, run in one go."""
    while True:
        try:
            next(building)
        except StopIteration as done:
            result: _T = done.value
            return result


async def run_sliced(building: Generator[None, None, _T]) -> _T:
    """What a builder pausing with ``yield`` returns, the event loop running other work at each pause."""
    while True:
        try:
            next(building)
        except StopIteration as done:
            result: _T = done.value
            return result
        await asyncio.sleep(0)


@dataclass
class Encoded:
    """Entries encoded as one JSON array within a byte budget (:func:`encode_entries`, :func:`encode_tree`)."""

    json: str
    #: entries in :attr:`json`
    count: int
    #: UTF-8 bytes of :attr:`json`
    size: int
    #: whether entries were left out because the next one did not fit in what was left of the budget
    truncated: bool = False
    #: index of the first entry left out for the budget (:func:`encode_entries`), ``None`` when none was
    next_index: int | None = None
    #: entries left out because each alone is larger than the whole budget (they can never be sent)
    oversized: int = 0


async def encode_entries(entries: Iterable[Any], budget: int) -> Encoded:
    """The JSON array of ``entries`` in order, at most ``budget`` bytes: it stops before the first entry that does
    not fit in what is left (:attr:`Encoded.next_index`) and skips, counted, one that alone is larger than the
    budget; encoded one by one, with a pause for the event loop every 256 KiB.

    Example:
        >>> import asyncio
        >>> out = asyncio.run(encode_entries([{"a": 1}, {"b": "x" * 100}, {"c": 3}], budget=20))
        >>> out.json, out.truncated, out.next_index, out.oversized
        ('[{"a":1},{"c":3}]', False, None, 1)
        >>> asyncio.run(encode_entries([{"a": 1}, {"c": 3}], budget=12)).next_index
        1
    """
    pieces: list[str] = []
    used = 2  # the brackets
    since_pause = 0
    oversized = 0
    for index, entry in enumerate(entries):
        text = dumps(entry)
        size = frame_bytes(text)
        if used + size + (1 if pieces else 0) > budget:
            if size + 2 > budget:
                oversized += 1
                continue
            return Encoded("[" + ",".join(pieces) + "]", len(pieces), used, True, index, oversized)
        used += size + (1 if pieces else 0)
        pieces.append(text)
        since_pause += size
        if since_pause >= _SLICE_BYTES:
            since_pause = 0
            await asyncio.sleep(0)
    return Encoded("[" + ",".join(pieces) + "]", len(pieces), used, oversized=oversized)


async def encode_tree(roots: Sequence[dict[str, Any]], budget: int) -> Encoded:
    """The JSON array of :func:`trace_tree`'s ``roots`` within ``budget`` bytes: depth first, each span encoded on
    its own (a pause for the event loop every 256 KiB); once a span does not fit, it and every span after it in
    that order are left out (:attr:`Encoded.truncated`), so the answer is the start of the tree.

    Example:
        >>> import asyncio
        >>> tree = [{"n": 1, "children": [{"n": 2, "children": []}, {"n": 3, "children": []}]}]
        >>> asyncio.run(encode_tree(tree, 1000)).json
        '[{"n":1,"children":[{"n":2,"children":[]},{"n":3,"children":[]}]}]'
        >>> out = asyncio.run(encode_tree(tree, 50))
        >>> out.json, out.count, out.truncated
        ('[{"n":1,"children":[{"n":2,"children":[]}]}]', 2, True)
    """
    used = 2
    count = since_pause = 0
    cut = False

    async def node(span: dict[str, Any]) -> str | None:
        nonlocal used, count, since_pause, cut
        if cut:
            return None
        own = dumps({key: value for key, value in span.items() if key != "children"})
        head = own[:-1] + (',"children":[' if len(own) > 2 else '"children":[')
        size = frame_bytes(head) + 2
        if used + size > budget:
            cut = True
            return None
        used += size
        count += 1
        since_pause += size
        if since_pause >= _SLICE_BYTES:
            since_pause = 0
            await asyncio.sleep(0)
        kids: list[str] = []
        for kid in span["children"]:
            used += 1 if kids else 0  # its comma (counted even when the kid does not fit: the safe side)
            text = await node(kid)
            if text is None:
                break
            kids.append(text)
        return head + ",".join(kids) + "]}"

    pieces: list[str] = []
    for root in roots:
        used += 1 if pieces else 0
        text = await node(root)
        if text is None:
            break
        pieces.append(text)
    return Encoded("[" + ",".join(pieces) + "]", count, used, cut)


def answer_json(fields: dict[str, Any]) -> EncodedResult:
    """An answer object whose values are encoded here, or spliced in when already encoded (:class:`EncodedResult`:
    the lists :func:`encode_entries` made), in the order given.

    Example:
        >>> answer_json({"logs": EncodedResult("[1,2]"), "total": 2}).json
        '{"logs":[1,2],"total":2}'
    """
    parts = (f"{dumps(key)}:{value.json if type(value) is EncodedResult else dumps(value)}"
             for key, value in fields.items())
    return EncodedResult("{" + ",".join(parts) + "}")


def percentile(sorted_values: Sequence[float], pct: int) -> float:
    """``sorted[floor(n * pct / 100)]``, clamped to the last value; 0 for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0], 99), percentile([], 50)
        (3.0, 2.0, 0.0)
    """
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, len(sorted_values) * pct // 100)])


def _scaled_sum(values: Sequence[float]) -> float:
    return math.fsum(value * _SCALE for value in values)


def total(values: Sequence[float]) -> float:
    """The exactly rounded sum of finite ``values`` (:func:`math.fsum`): ``±inf`` only when the sum itself is beyond
    the largest double, never because a partial sum was (``sum`` made ``inf`` of two points of 1.7e308, and of
    ``[1.7e308, 1.7e308, -1.7e308]``).

    Example:
        >>> total([1.7e308, 1.7e308, -1.7e308]), total([1.7e308, 1.7e308]), total([0.1] * 10)
        (1.7e+308, inf, 1.0)
    """
    try:
        return math.fsum(values)
    except OverflowError:  # a partial sum passed the largest double
        return _scaled_sum(values) / _SCALE


def mean(values: Sequence[float]) -> float:
    """The mean of finite ``values`` (not empty), finite whatever their sum.

    Example:
        >>> mean([1.7e308, 1.7e308]), mean([1.0, 2.0])
        (1.7e+308, 1.5)
    """
    whole = total(values)
    if math.isfinite(whole):
        return whole / len(values)
    return _scaled_sum(values) / len(values) / _SCALE


#: The metric kinds whose points hold a distribution (``count``, ``sum``...) rather than one ``value``.
DISTRIBUTIONS = frozenset({"histogram", "exponential_histogram", "summary"})


def point_value(metric_type: Any, point: dict[str, Any]) -> float | None:
    """What one data point counts as in aggregates and alert rules: a number point's ``value`` (``None``: NaN was
    sent), a histogram's, exponential histogram's or summary's ``sum`` (the sum of what it observed).

    Why: only ``value`` was read, and these kinds have none: rules on them never fired and aggregates left them out
    without a word (our SDK sends every histogram as an exponential histogram).

    Example:
        >>> point_value("gauge", {"value": 2.5}), point_value("exponential_histogram", {"count": 3, "sum": 12.5})
        (2.5, 12.5)
        >>> point_value("counter", {"value": None}) is None
        True
    """
    value = point.get("sum") if metric_type in DISTRIBUTIONS else point.get("value")
    return None if value is None else float(value)


def aggregate(metrics: Sequence[dict[str, Any]], interval_s: float) -> list[dict[str, Any]]:
    """AggregatedMetric entries: points bucketed by ``floor(ingestion time / interval)``, each point counting as
    :func:`point_value` (a histogram's or summary's ``sum``); ``sum`` is null when it is beyond the largest double
    (the points are finite: NaN and infinities are stored as null), ``avg`` is always a number. An interval of
    2**63 ns or more is one bucket.

    Example:
        >>> [b["bucket_end_ns"] == 2**63 for b in aggregate([{"name": "m", "timestamp_unix_nano": 5,
        ...                                                    "data_points": [{"value": 1.0}]}], 10**400)]
        [True]
        >>> [(b["count"], b["sum"]) for b in aggregate([{"name": "h", "metric_type": "histogram",
        ...     "timestamp_unix_nano": 5, "data_points": [{"count": 3, "sum": 12.5}, {"count": 1, "sum": 2.0}]}], 60)]
        [(2, 14.5)]
    """
    # Capped at 2**63 ns (292 years, one bucket): 1e300 s used to overflow to infinity and fail the call; compared
    # before any conversion, as an integer of 10**400 s has no float (OverflowError).
    width = max(1, int(min(min(interval_s, _MAX_INTERVAL_S) * 1e9, 2.0**63)))
    buckets: dict[tuple[str, int], list[float]] = {}
    for metric in metrics:
        start = metric["timestamp_unix_nano"] // width * width
        kind = metric.get("metric_type")
        values = [value for p in metric["data_points"] if (value := point_value(kind, p)) is not None]  # null: NaN
        if values:
            buckets.setdefault((metric["name"], start), []).extend(values)
    out: list[dict[str, Any]] = []
    for (name, start), values in sorted(buckets.items()):
        values.sort()
        whole = total(values)
        entry: dict[str, Any] = {"name": name, "bucket_start_ns": start, "bucket_end_ns": start + width,
                                 "count": len(values), "sum": whole if math.isfinite(whole) else None,
                                 "min": values[0], "max": values[-1], "avg": mean(values)}
        if len(values) >= 5:
            entry["percentiles"] = {f"p{p}": percentile(values, p) for p in (50, 75, 90, 95, 99)}
        out.append(entry)
    return out
