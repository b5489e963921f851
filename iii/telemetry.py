"""OpenTelemetry set-up and trace-context helpers of the SDK (reference surface,
docs/protocol.md#reference-sdk-differences).

``init_otel`` builds tracer, meter and logger providers whose exporters write OTLP-JSON telemetry frames
(:mod:`iii.telemetry_exporters`). Ours (docs/protocol.md#sdk-improvements S12): the frames go to ``frame_sink``, which
the SDK client
points at its own worker socket, instead of a second WebSocket. Everything works without ``opentelemetry``
installed: the query helpers return ``None`` / ``{}`` and ``init_otel`` raises ``ImportError`` exactly like the
reference (the client catches it).

Unlike the reference, ``init_otel`` after ``shutdown_otel`` works again in the same process: the global tracer
provider is installed once as a switch whose target is the current provider.

Example:
    >>> frames: list[bytes] = []
    >>> init_otel(OtelConfig(service_name="docs", fetch_instrumentation_enabled=False), frame_sink=frames.append)
    >>> async def work(span: Any) -> str | None:
    ...     return current_trace_id()
    >>> import asyncio
    >>> len(asyncio.run(with_span("job", work)))
    32
    >>> shutdown_otel()
    >>> any(frame.startswith(b"OTLP") for frame in frames)
    True
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from .telemetry_exporters import FrameSink, SharedEngineConnection
from .telemetry_types import LOG_QUEUE_RECORDS_DEFAULT, MAX_INTERVAL_MS, OtelConfig, env_int, otel_enabled

__all__ = [
    "OtelConfig",
    "attach_event_loop",
    "attach_frame_sink",
    "begin_handler",
    "client_count",
    "current_span_id",
    "current_trace_id",
    "extract_baggage",
    "extract_context",
    "extract_traceparent",
    "force_flush",
    "get_all_baggage",
    "get_baggage_entry",
    "get_logger",
    "get_meter",
    "get_tracer",
    "init_otel",
    "inject_baggage",
    "inject_traceparent",
    "is_initialized",
    "register_client",
    "release_client_async",
    "remove_baggage_entry",
    "set_baggage_entry",
    "shutdown_otel",
    "shutdown_otel_async",
    "span_traceparent",
    "start_client",
    "start_handler",
    "start_handler_span",
    "trace_headers",
    "with_span",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_DEFAULT_SERVICE_NAME: Final = "iii-python-sdk"
_SCOPE: Final = "iii-python-sdk"
_enabled = otel_enabled  # (the one decision, shared with the settings check of iii.telemetry_types)


def _int_setting(explicit: int | None, env_var: str, default: int, minimum: int = 1,
                 maximum: int = sys.maxsize) -> int:
    """Explicit config (checked by :class:`OtelConfig`), else a valid environment value, else the default (the
    reference's order); an environment value outside ``minimum..maximum`` or not a whole number is ignored with a
    warning (:func:`iii.telemetry_types.env_int`)."""
    if explicit is not None:
        return explicit
    return env_int(env_var, default, minimum, maximum)


def _log_flush_ms(cfg: OtelConfig) -> int:
    """The log processor's flush interval: ``cfg.logs_flush_interval_ms``, else ``OTEL_LOGS_FLUSH_INTERVAL_MS``
    (1..10**12; 0 made OpenTelemetry refuse it, and the worker never connected), else 100."""
    return _int_setting(cfg.logs_flush_interval_ms, "OTEL_LOGS_FLUSH_INTERVAL_MS", 100, maximum=MAX_INTERVAL_MS)


def _log_queue_records() -> int:
    """OpenTelemetry's log queue size in records: ``OTEL_BLRP_MAX_QUEUE_SIZE``, else 2048."""
    return _int_setting(None, "OTEL_BLRP_MAX_QUEUE_SIZE", LOG_QUEUE_MAX_RECORDS)


def _log_batch_size(cfg: OtelConfig) -> int:
    """Log records per export: ``cfg.logs_batch_size``, else ``OTEL_LOGS_BATCH_SIZE`` (at most the queue's size,
    which OpenTelemetry requires), else 1."""
    return _int_setting(cfg.logs_batch_size, "OTEL_LOGS_BATCH_SIZE", 1, maximum=_log_queue_records())


def init_otel(
    config: OtelConfig | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    frame_sink: FrameSink | None = None,
) -> None:
    """Set up tracing, metrics and logs exporting to ``frame_sink``; later calls only attach what is missing.

    ``loop``: frames are handed to the sink on this loop's thread (the sink need not be thread-safe). Frames
    produced before a sink is known are buffered (bounded). Disabled by ``config.enabled=False`` or, when that
    is unset, ``OTEL_ENABLED=false|0|no|off``.

    Raises:
        ImportError: telemetry is enabled but ``opentelemetry-api`` / ``opentelemetry-sdk`` are not installed.

    Example:
        >>> init_otel(OtelConfig(enabled=False))
        >>> is_initialized()
        False
    """
    return _runtime.init_otel(config, loop, frame_sink=frame_sink)


def _make_switch() -> Any:
    from opentelemetry import trace

    from .otel_internals import agnostic_contextmanager

    class SwitchTracer(trace.Tracer):
        """A tracer that resolves to the switch's current provider at every span."""

        def __init__(self, switch: SwitchTracerProvider, args: tuple[Any, ...]) -> None:
            self._switch = switch
            self._args = args

        def _current(self) -> trace.Tracer:
            target = self._switch.target or trace.NoOpTracerProvider()
            return target.get_tracer(*self._args)

        def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
            return self._current().start_span(*args, **kwargs)

        @agnostic_contextmanager
        def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
            with self._current().start_as_current_span(*args, **kwargs) as span:
                yield span

    class SwitchTracerProvider(trace.TracerProvider):
        """The global tracer provider: forwards to ``target`` (``None`` = no-op)."""

        def __init__(self) -> None:
            self.target: Any = None

        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            names = ("instrumenting_module_name", "instrumenting_library_version", "schema_url", "attributes")
            full = args + tuple(kwargs.get(name) for name in names[len(args) :])
            return SwitchTracer(self, full)

    return SwitchTracerProvider()


_MAX_PARKED: Final = 4
#: How long a client's shutdown waits for each provider to export what it holds (what ``shutdown()`` waits).
_FLUSH_TIMEOUT_MS: Final = 30_000
#: How long parking a pipeline waits for its threads to end (their last export goes to a detached output at once).
_PAUSE_TIMEOUT_S: Final = 5.0


class _Output(SharedEngineConnection):
    """Where one pipeline's exporters write: the current client's connection, or (parked) nowhere.

    The exporters are built once per pipeline; each client that uses the pipeline points ``target`` at its own
    connection. Frames made while no client uses it (a metrics reader's tick) are counted and dropped, as a shut
    down provider dropped them.

    Example:
        >>> output, got = _Output(), []
        >>> output.send_threadsafe(b"LOGS", b"{}")
        >>> output.target = SharedEngineConnection(got.append)
        >>> output.send_threadsafe(b"LOGS", b"{}")
        >>> got, output.dropped
        ([b'LOGS{}'], 1)
    """

    def __init__(self) -> None:
        super().__init__(None)
        self.target: SharedEngineConnection | None = None
        self.dropped = 0

    @property
    def engine_limit(self) -> int | None:
        """The current target's engine limit (see :attr:`SharedEngineConnection.engine_limit`)."""
        target = self.target
        return None if target is None else target.engine_limit

    def send_threadsafe(self, prefix: bytes, payload: bytes) -> None:
        """Hand the frame to the current target; without one, drop it (counted)."""
        target = self.target
        if target is None:
            self.dropped += 1
            return
        target.send_threadsafe(prefix, payload)


LOG_QUEUE_WARNING_INTERVAL_S: Final = 10.0
"""Seconds between two warnings that log records were dropped before OpenTelemetry's log queue."""

LOG_QUEUE_MAX_BYTES: Final = 16 * 1024 * 1024
"""Default bytes of log records (as :func:`log_record_bytes` estimates them) waiting for export at once
(``OtelConfig.logs_max_queue_bytes`` / ``OTEL_LOGS_MAX_QUEUE_BYTES`` change it)."""

LOG_QUEUE_MAX_RECORDS: Final = LOG_QUEUE_RECORDS_DEFAULT
"""OpenTelemetry's own default size of its log queue, in records (``OTEL_BLRP_MAX_QUEUE_SIZE``)."""

# What log_record_bytes counts besides a record's texts: the record's own objects, a number, a container's slot.
_RECORD_OVERHEAD: Final = 512
_SCALAR_BYTES: Final = 16
_SLOT_BYTES: Final = 8
_MAX_WALK_DEPTH: Final = 64
_TEXTS: Final = frozenset({str, bytes, bytearray})
_SCALARS: Final = frozenset({int, float, bool, type(None)})
_getsizeof: Final = sys.getsizeof
_chain: Final = itertools.chain.from_iterable
# other containers walked as lists are (the size of a set of 1 MB of strings is its table's alone)
_COLLECTIONS: Final = frozenset({set, frozenset, collections.deque, type({}.keys()), type({}.values()),
                                 type({}.items())})
_mapping_types: set[type] = {dict}  # types seen to be Mappings (an ABC's isinstance is slow, once a record)


def log_record_bytes(record: Any, limit: int = 1 << 62) -> int:
    """An estimate of the memory a log record holds (``record``: an SDK ``ReadWriteLogRecord``/``ReadableLogRecord``
    or an API ``LogRecord``): its body and attributes walked, each text by ``sys.getsizeof`` (what the interpreter
    keeps, at least its UTF-8 size for most texts), plus a constant per record, number and container slot. The walk
    stops once past ``limit`` (a value made of one list repeated would take its JSON size to walk).

    Example:
        >>> from opentelemetry._logs import LogRecord
        >>> small = log_record_bytes(LogRecord(body="hi", attributes={"k": [1, 2]}))
        >>> big = log_record_bytes(LogRecord(body="x" * 1_000_000))
        >>> small < 1024, 1_000_000 < big < 1_001_024, log_record_bytes(LogRecord(body="x" * 5000), limit=100) > 100
        (True, True, True)
        >>> [log_record_bytes(LogRecord(body=kind)) > 1_000_000
        ...  for kind in (frozenset({"x" * 1_000_000}), memoryview(bytes(1_000_000)), {"k": "x" * 1_000_000}.values())]
        [True, True, True]
    """
    inner = getattr(record, "log_record", record)
    body = getattr(inner, "body", None)
    total = _RECORD_OVERHEAD + (_getsizeof(body) if type(body) is str else _value_bytes(body, 0, limit))
    if total > limit:
        return total
    attributes = getattr(inner, "attributes", None)
    if attributes is not None and type(attributes) is not dict:
        attributes = _otel_internals().attributes_items(attributes)
    return total + _value_bytes(attributes, 0, limit - total)


@functools.cache
def _otel_internals() -> Any:
    from . import otel_internals  # (imports OpenTelemetry: not at this module's import)

    return otel_internals


def _value_bytes(value: Any, depth: int, limit: int) -> int:
    """:func:`log_record_bytes` of one value; past ``limit`` it returns at once (some value over it). A container's
    strings and numbers are sized in its loop, without a call each: this runs for every record."""
    kind = type(value)
    if kind in _TEXTS:
        return _getsizeof(value)
    if kind in _SCALARS:
        return _SCALAR_BYTES
    if depth >= _MAX_WALK_DEPTH:  # (a record's values cannot nest deeper in OTLP-JSON: the wire refuses it)
        return _SCALAR_BYTES
    if kind not in _mapping_types and isinstance(value, Mapping):
        _mapping_types.add(kind)
    depth += 1
    items: Iterable[Any]
    if kind in _mapping_types:
        items = _chain(value.items())  # keys and values, one after the other (no Python-level call each)
    elif kind is list or kind is tuple or kind in _COLLECTIONS:
        items = value
    elif kind is memoryview:
        return _getsizeof(value) + int(value.nbytes)  # (a view holds its buffer: 1 MB was counted as 184 bytes)
    else:
        return _getsizeof(value)  # written as its str() by the exporter: counted as the object it is now
    total = _SLOT_BYTES * len(value)
    for item in items:
        kind = type(item)
        total += _getsizeof(item) if kind is str else _SCALAR_BYTES if kind in _SCALARS \
            else _value_bytes(item, depth, limit - total)
        if total > limit:
            break
    return total


class LogQueueBudget:
    """The bytes of the log records (:func:`log_record_bytes`) waiting between their emit and the end of their
    export: a record that would take them past ``max_bytes``, or is over ``record_limit`` bytes alone, is refused and
    counted (``over_budget``, ``oversized``), said in a warning at most every :data:`LOG_QUEUE_WARNING_INTERVAL_S`.
    ``max_records`` (when set) refuses a record as ``queue_full`` once that many wait: the bound in records where
    OpenTelemetry's queue cannot be watched (without it, that queue pushes its oldest out, see
    :func:`_counting_log_processor`). Never blocks for more than a lock held over a queue append.

    Why: OpenTelemetry's batch queue is bounded in records only (2,048): 1,500 ``Logger`` records of 1 MB made
    faster than they were exported took a worker to 450-620 MB (1.2 GB in an earlier measurement), 100-120 MB with
    this budget. Its records leave it oldest first, so the sizes are kept in the same order and an export of ``n``
    records frees the ``n`` oldest (:meth:`release`).

    Example:
        >>> budget = LogQueueBudget(max_bytes=1000, record_limit=600)
        >>> budget.admit(500), budget.admit(400), budget.admit(200), budget.admit(700)
        (None, None, 'over_budget', 'oversized')
        >>> budget.release(1); budget.queued_bytes, budget.queued_records, budget.dropped
        (400, 1, 2)
    """

    def __init__(self, max_bytes: int = LOG_QUEUE_MAX_BYTES, record_limit: int | None = None,
                 max_records: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.record_limit = max_bytes if record_limit is None else min(record_limit, max_bytes)
        self.max_records = max_records
        # Held by emitting threads around admit + queue append (the sizes in the queue's order). Reentrant: a warning
        # said while it is held (the SDK's) may come back as a log record on this thread. The export's release does
        # not take it: held over OpenTelemetry's emit, it made the export thread wait behind every emitter (small
        # records cost 23-35 us a record instead of 16-18, and the queue, drained slower, overflowed).
        self.lock = threading.RLock()
        self._sizes: collections.deque[int] = collections.deque()
        # queued bytes = admitted - freed - pushed; each counter has one writer (emitters under the lock; the export,
        # which OpenTelemetry runs one at a time), so none is lost to a race
        self._admitted = 0
        self._freed = 0
        self._pushed = 0
        self.over_budget = 0  # refused: max_bytes would have been passed
        self.oversized = 0  # refused: over record_limit on its own (it could never be sent in one frame)
        self.queue_full = 0  # refused: max_records were waiting
        self._guessed = False  # a push-out was accounted since the last export ended
        self._told = float("-inf")
        self._untold = 0
        self.open = True

    @property
    def queued_bytes(self) -> int:
        """Bytes of the records admitted whose export has not ended yet."""
        return self._admitted - self._freed - self._pushed

    @property
    def queued_records(self) -> int:
        """Records admitted whose export has not ended yet."""
        return len(self._sizes)

    @property
    def dropped(self) -> int:
        """Records refused, for any reason."""
        return self.over_budget + self.oversized + self.queue_full

    def admit(self, size: int) -> str | None:
        """Take a record of ``size`` bytes in (``None``), or say why not (its counter's name, counted). The caller
        holds :attr:`lock`, and queues the record before letting it go, so the sizes stay in the queue's order."""
        if size > self.record_limit:
            self.oversized += 1
            return "oversized"
        if self.max_records is not None and len(self._sizes) >= self.max_records:
            self.queue_full += 1
            return "queue_full"
        if self.queued_bytes + size > self.max_bytes:
            self.over_budget += 1
            return "over_budget"
        self._sizes.append(size)
        self._admitted += size
        return None

    def unadmit(self, size: int) -> None:
        """The record just admitted (of ``size`` bytes, :attr:`lock` still held) was not queued after all."""
        self._sizes.pop()  # (the newest: an export frees only records queued before it)
        self._admitted -= size

    def pushed_out(self) -> None:
        """OpenTelemetry's full queue is pushing its oldest record out (:attr:`lock` held): the oldest size goes.
        (While an export is in flight that is one of its records' sizes: the attribution is right again when the
        export ends, see :meth:`release`.)"""
        try:
            self._pushed += self._sizes.popleft()
        except IndexError:
            return
        self._guessed = True

    def release(self, count: int, waiting: Callable[[], int] | None = None) -> None:
        """The export of the ``count`` oldest records ended (whether it sent them or not): their bytes are free.
        ``waiting``: how many records OpenTelemetry's queue holds now, when that can be known; after a push-out,
        sizes past it (a push-out guessed but not made: the export thread took records at that moment) go, oldest
        first."""
        sizes = self._sizes
        freed = 0
        for _ in range(count):
            try:
                freed += sizes.popleft()
            except IndexError:  # (a push-out took its size)
                break
        self._freed += freed
        if not self._guessed:
            return
        with self.lock:  # (rare: after a push-out) no emitter between its admit and its queue append meanwhile
            self._guessed = False
            while waiting is not None and len(sizes) > waiting():
                self._freed += sizes.popleft()

    def reset(self) -> None:
        """Nothing waits any more (a parked pipeline's queue, flushed; a forked child's, emptied by the SDK); the
        next refusal is told at once (to the pipeline's new client, or the child). The counters go on."""
        self.lock = threading.RLock()  # (in a forked child the parent's could be held by a thread that is gone)
        self._sizes.clear()
        self._admitted = self._freed = self._pushed = 0
        self._guessed = False
        self._told, self._untold = float("-inf"), 0

    def tell(self, refused: str) -> None:
        """Count a refused record towards the next warning and say it when the last one is old enough (never with
        :attr:`lock` held: the warning may itself come back as a log record)."""
        with self.lock:
            self._untold += 1
            now = time.monotonic()
            if now - self._told < LOG_QUEUE_WARNING_INTERVAL_S:
                return
            self._told, untold, self._untold = now, self._untold, 0
            counts = (self.over_budget, self.oversized, self.queue_full, self.queued_records, self.queued_bytes)
        log.warning("log records dropped before OpenTelemetry's log queue: %d since the last such warning (this one: "
                    "%s); in all %d as %d bytes of records were waiting, %d over %d bytes alone, %d as the queue "
                    "was full; now %d records of %d bytes wait (records are made faster than they are exported: "
                    "logs_max_queue_bytes, logs_batch_size)", untold, refused, counts[0], self.max_bytes, counts[1],
                    self.record_limit, counts[2], counts[3], counts[4])


@functools.cache
def _counting_log_processor(base: type) -> type:
    """``BatchLogRecordProcessor`` (``base``) that counts the records its full queue pushes out, in ``queue_full``,
    with a warning at most every :data:`LOG_QUEUE_WARNING_INTERVAL_S`. Why: a burst of ``Logger`` records while
    the engine was away (3,000 in 0.07 s) lost 146-711 of them there, counted nowhere (the SDK logged one line).

    Given a :class:`LogQueueBudget` (``budget=``), its records are first admitted by it: refused ones are dropped
    there, counted, never queued. Its exporter must then call ``release_exported`` when each export ends
    (:class:`~iii.telemetry_exporters.EngineLogExporter` does, given it). Where OpenTelemetry's queue cannot be
    watched (another layout, see :mod:`iii.otel_internals`) the budget bounds the records too (refusing the newest):
    a push-out unseen would leave its size accounted for good."""
    from .otel_internals import batch_full, batch_of, batch_waiting

    class CountingLogProcessor(base):  # type: ignore[misc]
        """A batch log processor counting, in ``queue_full``, the records its full queue pushed out; bounded in
        bytes by its ``budget`` (if any)."""

        def __init__(self, *args: Any, budget: LogQueueBudget | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._batch = batch_of(self)  # None (one warning at the first look) where the SDK's layout differs
            self._full_lock = threading.Lock()
            self._full_told = float("-inf")
            self._full_since_told = 0
            self._queue_full = 0
            self.budget = budget
            batch = self._batch
            self._waiting = None if batch is None else functools.partial(batch_waiting, batch)
            if budget is None:
                return
            if self._batch is None:
                budget.max_records = kwargs.get("max_queue_size") or LOG_QUEUE_MAX_RECORDS
            own = weakref.ref(budget)

            def reset_in_child() -> None:  # the SDK empties its queue in a forked child: so are the sizes
                child_budget = own()
                if child_budget is not None:
                    child_budget.reset()

            os.register_at_fork(after_in_child=reset_in_child)

        @property
        def queue_full(self) -> int:
            """Records lost as the queue was full: pushed out of it (or, where it cannot be watched, refused)."""
            return self._queue_full + (0 if self.budget is None else self.budget.queue_full)

        def release_exported(self, count: int) -> None:
            """The export of ``count`` records ended: the budget frees them."""
            budget = self.budget
            if budget is not None:
                budget.release(count, self._waiting)

        def on_emit(self, log_record: Any) -> None:
            budget = self.budget
            if budget is None or not budget.open:  # (shut down or parked: OpenTelemetry drops it, unaccounted)
                self._emit(log_record, budget)
                return
            try:
                size = log_record_bytes(log_record, budget.record_limit)
            except Exception:  # a mapping whose items() raises: the exporter drops it as unwritable anyway
                size = _RECORD_OVERHEAD
            with budget.lock:
                refused = budget.admit(size)
                if refused is None:
                    try:
                        self._emit(log_record, budget)
                    except BaseException:
                        budget.unadmit(size)
                        raise
                    return
            budget.tell(refused)

        def _emit(self, log_record: Any, budget: LogQueueBudget | None) -> None:
            if self._batch is not None and (size := batch_full(self._batch)):
                if budget is not None and budget.open:
                    budget.pushed_out()
                self._pushed_out(size)
            super().on_emit(log_record)

        def shutdown(self) -> Any:
            if self.budget is not None:
                self.budget.open = False
            return super().shutdown()

        def _pushed_out(self, size: int) -> None:
            with self._full_lock:
                self._queue_full += 1
                self._full_since_told += 1
                now = time.monotonic()
                if now - self._full_told < LOG_QUEUE_WARNING_INTERVAL_S:
                    return
                self._full_told, since, self._full_since_told = now, self._full_since_told, 0
            log.warning("OpenTelemetry's log queue (%d records) was full: %d log record(s) pushed out since the last "
                        "such warning, %d in all (records are made faster than they are exported; a larger "
                        "logs_batch_size exports more a turn)", size, since, self.queue_full)

    return CountingLogProcessor


@dataclass
class _Pipeline:
    """What one configuration builds once per process: the providers, their processors and reader, and the
    output their exporters write to."""

    key: tuple[Any, ...]
    output: _Output
    tracer_provider: Any
    meter_provider: Any
    log_provider: Any
    log_processors: tuple[Any, ...]  # ours, as built: a user's added later is shut down when the pipeline parks

    def providers(self) -> list[Any]:
        """The providers built (metrics and logs may be off)."""
        return [p for p in (self.tracer_provider, self.meter_provider, self.log_provider) if p is not None]

    def workers(self) -> tuple[list[Any], list[Any]] | None:
        """The batch processors and metric readers that run a thread each, or ``None`` on another layout."""
        from .otel_internals import batch_of, metric_readers

        batches = [batch_of(p) for p in (self.tracer_provider.own_processor, *self.log_processors)]
        readers = [] if self.meter_provider is None else metric_readers(self.meter_provider)
        if readers is None or any(batch is None for batch in batches):
            return None
        return batches, readers


def _pipeline_key(cfg: OtelConfig) -> tuple[Any, ...]:
    """What a pipeline's construction depends on: two configurations with the same key can share one.

    The providers, processors and reader read ``OTEL_*`` variables (batch sizes, sampler, limits) when built.

    Example:
        >>> _pipeline_key(OtelConfig(service_name="a")) == _pipeline_key(OtelConfig(service_name="b"))
        True
    """
    logs = cfg.logs_enabled is None or cfg.logs_enabled
    return (
        cfg.metrics_enabled,
        cfg.metrics_export_interval_ms if cfg.metrics_enabled else None,
        logs,
        _log_flush_ms(cfg) if logs else None,
        _log_batch_size(cfg) if logs else None,
        _log_queue_bytes(cfg) if logs else None,
        tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("OTEL_"))),
    )


def _log_queue_bytes(cfg: OtelConfig) -> int:
    """The log queue's byte budget: ``cfg.logs_max_queue_bytes``, else ``OTEL_LOGS_MAX_QUEUE_BYTES``, else
    :data:`LOG_QUEUE_MAX_BYTES`.

    Example:
        >>> _log_queue_bytes(OtelConfig(logs_max_queue_bytes=4096))
        4096
    """
    return _int_setting(cfg.logs_max_queue_bytes, "OTEL_LOGS_MAX_QUEUE_BYTES", LOG_QUEUE_MAX_BYTES, minimum=1)


def _log_budget(processor: Any) -> LogQueueBudget | None:
    budget = getattr(processor, "budget", None)
    return budget if isinstance(budget, LogQueueBudget) else None


def _retarget(pipeline: _Pipeline, resource: Any) -> None:
    """Make a parked pipeline record under ``resource``, with no metric state of its previous client and new span
    and log exporters (an exporter keeps per-client state: the source whose spans it takes as texts, its counts).

    OpenTelemetry has no public way to change a provider's resource: :mod:`iii.otel_internals` does it; on a layout
    it does not know, it raises ``AttributeError`` (``InternalsMissing``) and the caller builds a new pipeline instead.
    """
    from .otel_internals import batch_exporter, batch_of, retarget_providers, set_batch_exporter
    from .telemetry_exporters import EngineLogExporter, EngineSpanExporter

    tracer_provider = pipeline.tracer_provider
    processors: list[tuple[Any, type[EngineSpanExporter | EngineLogExporter]]] = [
        (tracer_provider.own_processor, EngineSpanExporter)]
    processors += [(processor, EngineLogExporter) for processor in pipeline.log_processors]
    batches = [(batch_of(processor), exporter) for processor, exporter in processors]
    for batch, exporter in batches:
        if batch is None:
            raise AttributeError("a batch processor of another layout")
        if not isinstance(batch_exporter(batch), exporter):
            raise AttributeError(f"not our exporter: {batch_exporter(batch)!r}")
    retarget_providers(tracer_provider, pipeline.log_provider, pipeline.meter_provider, resource)
    for (processor, _), (batch, exporter) in zip(processors, batches, strict=True):
        # the queues are empty: flushed when the pipeline was parked
        new = exporter(pipeline.output)
        if isinstance(new, EngineLogExporter) and _log_budget(processor) is not None:
            new.on_export_end = processor.release_exported
        set_batch_exporter(batch, new)


def _drop_added_processors(pipeline: _Pipeline) -> None:
    """Shut down the span and log processors added to the pipeline's providers after it was built (a user's), as
    the providers' shutdown did before they were reused: the next client starts with only ours."""
    from .otel_internals import drop_added_processors

    tracer_provider = pipeline.tracer_provider
    added = drop_added_processors(tracer_provider, tracer_provider.own_processor, pipeline.log_provider,
                                  pipeline.log_processors)
    tracer_provider.shared = False
    for processor in added:
        try:
            processor.shutdown()
        except Exception:
            log.debug("telemetry processor shutdown failed", exc_info=True)


def _flush_providers(providers: list[Any]) -> None:
    for provider in providers:
        try:
            provider.force_flush(_FLUSH_TIMEOUT_MS)  # the last batches still reach the client's sink
        except Exception:
            log.debug("telemetry provider flush failed", exc_info=True)


def _shutdown_providers(providers: list[Any]) -> None:
    for provider in providers:
        try:
            provider.shutdown()  # flushes: the last batches still reach the sink
        except Exception:
            log.debug("telemetry provider shutdown failed", exc_info=True)


def shutdown_otel() -> None:
    """Flush every provider; telemetry is off until the next ``init_otel``, which reuses the providers (ours: built
    once per configuration, as each registers at-fork callbacks OpenTelemetry never removes). A shutdown racing
    another returns once that one's flush is over too (waiting for it at most 30 s from that flush's start).

    Example:
        >>> shutdown_otel()
        >>> get_tracer() is None
        True
    """
    return _runtime.shutdown_otel()


async def shutdown_otel_async() -> None:
    """Like :func:`shutdown_otel`, without blocking the event loop while the last batches are exported.

    Example:
        >>> asyncio.run(shutdown_otel_async())
    """
    return await _runtime.shutdown_otel_async()


def force_flush(timeout_millis: int = 5_000) -> bool:
    """Export everything recorded so far (ours). ``True`` when every provider flushed in time.

    Example:
        >>> force_flush()
        True
    """
    return _runtime.force_flush(timeout_millis)


def attach_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Deliver frames on ``loop``'s thread from now on (no-op if already started or not initialised)."""
    return _runtime.attach_event_loop(loop)


def attach_frame_sink(sink: FrameSink | None, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Send telemetry frames to ``sink`` from now on (ours); ``None`` buffers them again.

    ``loop`` is the sink's loop: frames are delivered on its thread from now on.

    Example:
        >>> attach_frame_sink(None)  # nothing initialised: no-op
    """
    return _runtime.attach_frame_sink(sink, loop)


@dataclass(frozen=True)
class _Flush:
    """One shutdown's flush and park, as other shutdowns see it: ``done`` is set when it ends; past ``until``
    (``time.monotonic()``) nobody waits for it any more (one whose thread never ran, its caller cancelled first, or
    that hangs in an exporter, would otherwise hold every later shutdown for the whole bound, each time)."""

    done: threading.Event
    until: float


@dataclass
class _Closing:
    """One shutdown's work: the pipeline it took (``None``: none was on), to flush and park, and the flushes of the
    shutdowns before it that were still running when it started.

    Example:
        >>> _Closing(None, _Flush(threading.Event(), 0.0), []).idle()
        True
    """

    pipeline: _Pipeline | None
    flush: _Flush
    earlier: list[_Flush]
    #: someone carries it out (:meth:`TelemetryRuntime._begin`)
    begun: bool = False

    def idle(self) -> bool:
        """Nothing to flush and nothing to wait for: the shutdown is over already."""
        return self.pipeline is None and not self.earlier


@dataclass
class _Client:
    """A client that uses the process-wide telemetry: where its frames go, and on which loop."""

    sink: FrameSink
    loop: asyncio.AbstractEventLoop | None


class TelemetryRuntime:
    """Everything ``init_otel`` created, and the clients keeping it on: the one owned telemetry object.

    The module functions (the reference's public API) delegate to the process's instance, :func:`runtime`.

    Example:
        >>> runtime().is_initialized() is is_initialized()
        True
    """

    def __init__(self) -> None:
        self.initialized = False
        self.tracer_provider: Any = None
        self.tracer: Any = None
        self.handler_spans: Any = None  # iii.light_span.HandlerSpans of tracer_provider (imported with OTel)
        self.meter_provider: Any = None
        self.meter: Any = None
        self.log_provider: Any = None
        self.connection: SharedEngineConnection | None = None
        self.pipeline: _Pipeline | None = None
        # Shut-down pipelines kept for the next client of the same configuration (at most _MAX_PARKED): OpenTelemetry
        # registers an at-fork callback per provider, processor and reader that is never removed, so building them
        # per client grew the process by ~6 KB per client (issue: register_worker + shutdown cycles).
        self._parked: dict[tuple[Any, ...], _Pipeline] = {}
        self.switch: Any = None  # the global tracer provider we installed, see _install_global_tracer_provider
        self.globals_set = False
        self.original_urlopen: Any = None
        # Telemetry is process-wide but clients come and go: it stays on while any registered client is alive.
        # Keys are the client objects themselves (identity), insertion-ordered so a handover picks the oldest.
        self._clients: dict[object, _Client] = {}
        self._clients_lock = threading.Lock()
        # Clients start on loop threads of their own: two at once both found telemetry off and both set it up (the
        # second set the process's meter provider again: "Overriding of current MeterProvider is not allowed").
        self._init_lock = threading.Lock()
        # One client's start (init, then register) and the last client's release (release, then take the state)
        # each happen whole: interleaved, a client starting as the last other one shut down was left with telemetry
        # off (its init saw it on, its register saw it off) or was wiped from the clients by the shutdown.
        self._membership_lock = threading.Lock()
        # One event per shutdown still flushing and parking (under _clients_lock): a shutdown racing it returns only
        # when it is set, as its caller may exit next and the spans of that flush would be lost.
        self._flushing: list[_Flush] = []
        # set on a thread while it flushes and parks: a shutdown from there (an exporter or frame sink that shuts
        # telemetry down) would wait for its own flush
        self._in_flush = threading.local()

    def init_otel(
        self,
        config: OtelConfig | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        frame_sink: FrameSink | None = None,
    ) -> None:
        """Set up tracing, metrics and logs exporting to ``frame_sink``; later calls only attach what is missing."""
        with self._init_lock:
            self._init_otel(config, loop, frame_sink)

    def _init_otel(self, config: OtelConfig | None, loop: asyncio.AbstractEventLoop | None,
                   frame_sink: FrameSink | None) -> None:
        if self.initialized:
            connection = self.connection
            if connection is not None:
                if frame_sink is not None and connection.sink is None:
                    connection.attach(frame_sink)
                if loop is not None and not connection._started:
                    connection.start(loop)
            return

        cfg = config or OtelConfig()
        if not _enabled(cfg):
            return

        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: F401  (the SDK is installed)
        except ImportError as exc:
            raise ImportError(
                "opentelemetry-api and opentelemetry-sdk are required for telemetry; "
                "install them with: pip install 'iii-toolkit[otel]'"
            ) from exc

        service_name = cfg.service_name or os.environ.get("OTEL_SERVICE_NAME") or _DEFAULT_SERVICE_NAME
        attributes: dict[str, Any] = {
            "service.name": service_name,
            "service.version": cfg.service_version or os.environ.get("SERVICE_VERSION") or "unknown",
            "service.instance.id": (
                cfg.service_instance_id or os.environ.get("SERVICE_INSTANCE_ID") or str(uuid.uuid4())
            ),
            "telemetry.sdk.name": "iii-python-sdk",
            "telemetry.sdk.language": "python",
        }
        namespace = cfg.service_namespace or os.environ.get("SERVICE_NAMESPACE")
        if namespace:
            attributes["service.namespace"] = namespace
        resource = Resource.create(attributes)

        connection = SharedEngineConnection(frame_sink)
        if frame_sink is None and cfg.engine_ws_url:
            connection.url = cfg.engine_ws_url
        if loop is not None:
            connection.start(loop)

        pipeline = self._reuse(_pipeline_key(cfg), resource)
        if pipeline is None:
            pipeline = self._build(cfg, resource)
        pipeline.output.target = connection

        from .light_span import HandlerSpans

        tracer_provider = pipeline.tracer_provider
        self.pipeline = pipeline
        self.connection = connection
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer(_SCOPE)
        self.handler_spans = HandlerSpans(tracer_provider, _SCOPE)
        self._install_global_tracer_provider(tracer_provider)
        self.meter_provider = pipeline.meter_provider
        self.meter = None if pipeline.meter_provider is None else pipeline.meter_provider.get_meter(service_name)
        self.log_provider = pipeline.log_provider
        self.globals_set = True
        self.initialized = True
        if cfg.fetch_instrumentation_enabled:
            self._instrument_urllib()

    def _build(self, cfg: OtelConfig, resource: Any) -> _Pipeline:
        """New providers, processors and reader for ``cfg``, exporting through a fresh :class:`_Output`."""
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from .light_span import OwnTracerProvider
        from .otel_internals import log_processors as log_processors_of
        from .telemetry_exporters import EngineSpanExporter

        output = _Output()
        tracer_provider = OwnTracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(EngineSpanExporter(output)))  # type: ignore[arg-type]
        meter_provider = self._configure_metrics(resource, output, cfg) if cfg.metrics_enabled else None
        log_provider = (
            self._configure_logs(resource, output, cfg) if cfg.logs_enabled is None or cfg.logs_enabled else None
        )
        # None (another layout) leaves the pipeline unreusable: drop_added_processors refuses that layout too
        log_processors = () if log_provider is None else log_processors_of(log_provider) or ()
        return _Pipeline(_pipeline_key(cfg), output, tracer_provider, meter_provider, log_provider, log_processors)

    def _reuse(self, key: tuple[Any, ...], resource: Any) -> _Pipeline | None:
        """The parked pipeline of ``key`` made to record under ``resource`` with fresh metrics, or ``None``."""
        with self._clients_lock:
            pipeline = self._parked.pop(key, None)
        if pipeline is None:
            return None
        try:
            _retarget(pipeline, resource)
            workers = pipeline.workers()
            if workers is None:
                raise AttributeError("a processor or reader of another layout")
            from .otel_internals import resume_workers

            resume_workers(*workers)
            for processor in pipeline.log_processors:
                if (budget := _log_budget(processor)) is not None:
                    budget.reset()  # its records were exported or dropped (as by a shutdown) while parked
                    budget.open = True
        except Exception:  # another opentelemetry-sdk layout: build anew (one set of at-fork callbacks more)
            log.debug("telemetry providers could not be reused", exc_info=True)
            _shutdown_providers(pipeline.providers())
            return None
        return pipeline

    def _park(self, pipeline: _Pipeline) -> None:
        """Keep ``pipeline`` (already flushed) for the next client of its configuration; its output drops frames
        until then. At most ``_MAX_PARKED`` are kept: the oldest is shut down."""
        pipeline.output.target = None
        for processor in pipeline.log_processors:
            if (budget := _log_budget(processor)) is not None:
                budget.open = False  # OpenTelemetry's queue drops what is emitted while parked: nothing to account
        try:
            _drop_added_processors(pipeline)
            workers = pipeline.workers()
            from .otel_internals import pause_workers

            # A parked pipeline runs no thread: after the last client's shutdown nothing of telemetry is left running.
            if workers is None or not pause_workers(*workers, timeout_s=_PAUSE_TIMEOUT_S):
                raise AttributeError("the processors' and reader's threads could not be stopped")
        except Exception:  # another opentelemetry-sdk layout, or an export that did not end: not reusable
            log.debug("telemetry providers could not be parked", exc_info=True)
            _shutdown_providers(pipeline.providers())
            return
        with self._clients_lock:
            # one of the same configuration parked already (two were built when a client started during another's
            # shutdown): it is shut down, not dropped with its providers still registered at exit
            displaced = self._parked.pop(pipeline.key, None)
            self._parked[pipeline.key] = pipeline
            evicted = [self._parked.pop(key) for key in list(self._parked)[: max(0, len(self._parked) - _MAX_PARKED)]]
        if displaced is not None and displaced is not pipeline:
            evicted.append(displaced)
        for old in evicted:
            _shutdown_providers(old.providers())

    def _install_global_tracer_provider(self, provider: Any) -> None:
        """Point the process-wide tracer provider at ``provider``."""
        from opentelemetry import trace

        if self.switch is None:
            if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                log.debug("a global tracer provider is already set; iii spans use iii.telemetry.get_tracer() only")
                return
            self.switch = _make_switch()
            trace.set_tracer_provider(self.switch)
        self.switch.target = provider

    def _configure_metrics(self, resource: Any, connection: SharedEngineConnection, cfg: OtelConfig) -> Any:
        try:
            from opentelemetry import metrics
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        except ImportError:
            log.warning("opentelemetry-sdk metrics unavailable: metrics are not exported")
            return None
        from .telemetry_exporters import EngineMetricsExporter

        reader = PeriodicExportingMetricReader(
            EngineMetricsExporter(connection),  # type: ignore[arg-type]
            export_interval_millis=cfg.metrics_export_interval_ms,
        )
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        if not self.globals_set:  # settable once per process; self.get_meter() always returns ours
            metrics.set_meter_provider(provider)
        return provider

    def _configure_logs(self, resource: Any, connection: SharedEngineConnection, cfg: OtelConfig) -> Any:
        try:
            from opentelemetry import _logs
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        except ImportError:
            log.warning("opentelemetry-sdk logs unavailable: logs are not exported")
            return None
        from .telemetry_exporters import EngineLogExporter

        provider = LoggerProvider(resource=resource)
        # A record alone over a frame could never be sent: refused at once (the exporter would drop it after writing
        # its OTLP-JSON).
        exporter = EngineLogExporter(connection)
        processor = _counting_log_processor(BatchLogRecordProcessor)(
            exporter,
            schedule_delay_millis=_log_flush_ms(cfg),
            max_export_batch_size=_log_batch_size(cfg),
            # named here, not left to the SDK: where its queue cannot be watched the budget bounds the records to it
            max_queue_size=_log_queue_records(),
            budget=LogQueueBudget(_log_queue_bytes(cfg), record_limit=EngineLogExporter.max_frame_bytes),
        )
        exporter.on_export_end = processor.release_exported
        provider.add_log_record_processor(processor)
        if not self.globals_set:  # settable once per process; iii.logger.Logger always uses ours
            _logs.set_logger_provider(provider)
        return provider

    def _instrument_urllib(self) -> None:
        """Wrap ``urllib`` requests in CLIENT spans and propagate the trace context in their headers."""
        import urllib.request
        from urllib.parse import urlsplit

        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind, StatusCode

        if self.original_urlopen is not None:
            return
        original = urllib.request.OpenerDirector.open

        def traced_open(opener: urllib.request.OpenerDirector, fullurl: Any, data: Any = None, *args: Any) -> Any:
            tracer = self.tracer
            if tracer is None:
                return original(opener, fullurl, data, *args)
            request = fullurl if isinstance(fullurl, urllib.request.Request) else urllib.request.Request(fullurl, data)
            if request is not fullurl:
                data = None  # now carried by the Request
            method = request.get_method()
            parts = urlsplit(request.full_url)
            attrs: dict[str, Any] = {"http.request.method": method, "url.full": request.full_url}
            if parts.hostname:
                attrs["server.address"] = parts.hostname
            if parts.scheme:
                attrs["url.scheme"] = parts.scheme
            if parts.path:
                attrs["url.path"] = parts.path
            if parts.port:
                attrs["server.port"] = parts.port
            name = f"{method} {parts.path}" if parts.path else method
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attrs) as span:
                carrier: dict[str, str] = {}
                inject(carrier)
                for key, value in carrier.items():
                    request.add_unredirected_header(key, value)
                try:
                    response = original(opener, request, data, *args)
                except Exception as exc:
                    span.set_attribute("error.type", type(exc).__name__)
                    span.set_status(StatusCode.ERROR, str(exc))
                    span.record_exception(exc)
                    raise
                status = getattr(response, "status", None)
                if isinstance(status, int):
                    span.set_attribute("http.response.status_code", status)
                    span.set_status(StatusCode.ERROR if status >= 400 else StatusCode.OK)
                return response

        self.original_urlopen = original
        urllib.request.OpenerDirector.open = traced_open  # type: ignore[method-assign,assignment]

    def _uninstrument_urllib(self) -> None:
        if self.original_urlopen is None:
            return
        import urllib.request

        urllib.request.OpenerDirector.open = self.original_urlopen  # type: ignore[method-assign]
        self.original_urlopen = None

    def _take_state(self) -> _Closing:
        """Reset the module state and return what the shutdown still does: the pipeline to flush and park, the
        other shutdowns' flushes to wait for."""
        with self._init_lock:  # not half-way through a client's set-up
            pipeline, self.pipeline = self.pipeline, None
            now = time.monotonic()
            closing = _Closing(pipeline, _Flush(threading.Event(), now + _FLUSH_TIMEOUT_MS / 1000), [])
            with self._clients_lock:
                self._clients.clear()
                self._flushing = [flush for flush in self._flushing if flush.until > now]
                closing.earlier = list(self._flushing)
                if pipeline is not None:
                    self._flushing.append(closing.flush)
            self._uninstrument_urllib()
            if self.switch is not None:
                self.switch.target = None
            self.initialized = False
            self.tracer_provider = self.tracer = self.meter_provider = self.meter = self.log_provider = None
            self.handler_spans = None
            self.connection = None
            return closing

    def _flush_and_park(self, pipeline: _Pipeline) -> None:
        """Export what ``pipeline`` holds to its (last) client, then park it; blocks (async callers: in a thread)."""
        _flush_providers(pipeline.providers())
        self._park(pipeline)  # joins the pipeline's threads

    def _close(self, closing: _Closing) -> None:
        """Finish a shutdown: flush and park its pipeline, then wait for the flushes of the shutdowns before it (at
        most ``_FLUSH_TIMEOUT_MS``, what one flush waits); blocks (async callers: in a thread)."""
        if self._begin(closing):
            self._finish(closing)

    def _begin(self, closing: _Closing) -> bool:
        """Whether the caller is the one to carry ``closing`` out (once: its thread, or :meth:`_close_async`'s
        hand-off when that thread never began)."""
        with self._clients_lock:
            began, closing.begun = closing.begun, True
        return not began

    def _finish(self, closing: _Closing) -> None:
        if closing.pipeline is not None:
            outer = getattr(self._in_flush, "active", False)
            self._in_flush.active = True
            try:
                self._flush_and_park(closing.pipeline)
            finally:
                self._in_flush.active = outer
                closing.flush.done.set()
                with self._clients_lock:
                    if closing.flush in self._flushing:
                        self._flushing.remove(closing.flush)
        if getattr(self._in_flush, "active", False):
            return  # called from inside a flush (an exporter, a sink): the flush waited for would be its caller's
        deadline = time.monotonic() + _FLUSH_TIMEOUT_MS / 1000
        for flush in closing.earlier:
            flush.done.wait(max(0.0, min(deadline, flush.until) - time.monotonic()))

    async def _close_async(self, closing: _Closing) -> None:
        """:meth:`_close` in a thread. Cancelled before that thread began (the loop's executor busy), the shutdown is
        carried out on a thread of its own, not awaited: given up, its pipeline was never flushed nor parked, and
        every later shutdown waited for its flush for the whole bound. Not a daemon: the interpreter's exit joins it
        before OpenTelemetry's exit hooks shut the providers down (a daemon raced them: "shutdown can only be called
        once"), as a sync shutdown at exit would have held the exit for its flush."""
        try:
            await asyncio.to_thread(self._close, closing)
        except asyncio.CancelledError:
            if self._begin(closing):
                threading.Thread(target=self._finish, args=(closing,), name="iii-telemetry-shutdown").start()
            raise

    def shutdown_otel(self) -> None:
        """Flush every provider; telemetry is off until the next ``init_otel``, which reuses them. Returns once a
        shutdown running at the same time has flushed too."""
        closing = self._take_state()
        if not closing.idle():
            self._close(closing)

    async def shutdown_otel_async(self) -> None:
        """Like :func:`shutdown_otel`, without blocking the event loop while the last batches are exported."""
        closing = self._take_state()
        if not closing.idle():
            await self._close_async(closing)

    def force_flush(self, timeout_millis: int = 5_000) -> bool:
        """Export everything recorded so far (ours). ``True`` when every provider flushed in time."""
        ok = True
        for provider in (self.tracer_provider, self.meter_provider, self.log_provider):
            if provider is not None:
                ok = bool(provider.force_flush(timeout_millis)) and ok
        return ok

    def attach_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver frames on ``loop``'s thread from now on (no-op if already started or not initialised)."""
        connection = self.connection
        if self.initialized and connection is not None and not connection._started:
            connection.start(loop)

    def attach_frame_sink(self, sink: FrameSink | None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Send telemetry frames to ``sink`` from now on (ours); ``None`` buffers them again."""
        connection = self.connection
        if connection is None:
            return
        connection.attach(sink, loop)

    def register_client(self, owner: object, sink: FrameSink, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Count ``owner`` as a user of telemetry (ours); its ``sink`` carries frames if none does yet."""
        connection = self.connection
        if not self.initialized or connection is None:
            return
        with self._clients_lock:
            self._clients[owner] = _Client(sink, loop)
        if connection.sink is None:
            connection.attach(sink, loop)

    def client_count(self) -> int:
        """How many registered clients keep telemetry on (ours)."""
        with self._clients_lock:
            return len(self._clients)

    def _release(self, owner: object) -> bool:
        """Forget ``owner``; hand its frames to a survivor. ``True`` when it was the last one (shut down then)."""
        with self._clients_lock:
            gone = self._clients.pop(owner, None)
            if gone is None:
                return False
            survivor = next(iter(self._clients.values()), None)
        connection = self.connection
        if survivor is None:
            return True
        if connection is not None and connection.sink == gone.sink:
            connection.attach(survivor.sink, survivor.loop)
        return False

    def start_client(self, owner: object, config: OtelConfig | None, loop: asyncio.AbstractEventLoop,
                     sink: FrameSink) -> None:
        """``init_otel``, then deliver frames on ``loop`` and :meth:`register_client` ``owner``, as one step against
        the last client's release (ours)."""
        with self._membership_lock:
            self.init_otel(config, loop, frame_sink=sink)
            self.attach_event_loop(loop)
            self.register_client(owner, sink, loop)

    async def release_client_async(self, owner: object) -> None:
        """Undo :func:`register_client` (ours): telemetry shuts down only when ``owner`` was the last client."""
        connection = self.connection
        with self._membership_lock:  # (no await inside: a client's start waits at most for this step)
            closing = self._take_state() if self._release(owner) else None
        if closing is not None and not closing.idle():
            await self._close_async(closing)
        if connection is not None:
            connection.flush_now()  # before the client's socket closes: a turn-by-turn flush would come too late

    def get_tracer(self) -> Any:
        """The SDK's tracer, or ``None`` before ``init_otel``."""
        return self.tracer

    def get_meter(self) -> Any:
        """The SDK's meter, or ``None`` when metrics are not initialised."""
        return self.meter

    def get_logger(self, name: str = _SCOPE) -> Any:
        """An OpenTelemetry logger of the SDK's provider, or ``None`` when logs are not initialised."""
        provider = self.log_provider
        if not self.initialized or provider is None:
            return None
        return provider.get_logger(name)

    def is_initialized(self) -> bool:
        """Whether ``init_otel`` set telemetry up (and it was not shut down since)."""
        return self.initialized

    async def with_span(
        self,
        name: str,
        fn: Callable[[Any], Awaitable[T]],
        *,
        kind: Any = None,
        traceparent: str | None = None,
    ) -> T:
        """Run ``await fn(span)`` inside a new span (a no-op span when tracing is off); errors mark the span."""
        tracer = self.tracer
        if tracer is None:
            return await fn(_NoopSpan())
        from opentelemetry import context as otel_context
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, StatusCode

        parent = extract({"traceparent": traceparent}) if traceparent else otel_context.get_current()
        span_kind = kind if kind is not None else SpanKind.INTERNAL
        with tracer.start_as_current_span(name, kind=span_kind, context=parent) as span:
            try:
                result = await fn(span)
            except Exception as exc:
                span.set_status(StatusCode.ERROR, str(exc))
                span.record_exception(exc)
                raise
            span.set_status(StatusCode.OK)
            return result


_runtime = TelemetryRuntime()


def runtime() -> TelemetryRuntime:
    """The process's telemetry object (ours); the module functions delegate to it.

    Example:
        >>> runtime() is runtime()
        True
    """
    return _runtime


def register_client(owner: object, sink: FrameSink, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Count ``owner`` as a user of telemetry (ours); its ``sink`` carries frames if none does yet.

    Call after :func:`init_otel`; a no-op while telemetry is off. Registering again is harmless.

    Example:
        >>> register_client(object(), lambda frame: None)  # telemetry not initialised: no-op
        >>> client_count()
        0
    """
    return _runtime.register_client(owner, sink, loop)


def client_count() -> int:
    """How many registered clients keep telemetry on (ours)."""
    return _runtime.client_count()


def start_client(owner: object, config: OtelConfig | None, loop: asyncio.AbstractEventLoop,
                 sink: FrameSink) -> None:
    """Start telemetry for a client (ours): :func:`init_otel`, frames delivered on ``loop``, then
    :func:`register_client`, as one step, so that a client starting while the last other one shuts down is never
    left with telemetry off.

    Example:
        >>> loop = asyncio.new_event_loop()
        >>> owner = object()
        >>> start_client(owner, OtelConfig(enabled=False), loop, lambda frame: None)  # off: nothing registered
        >>> client_count(), loop.close()
        (0, None)
    """
    return _runtime.start_client(owner, config, loop, sink)


async def release_client_async(owner: object) -> None:
    """Undo :func:`register_client` (ours): telemetry shuts down only when ``owner`` was the last client.

    If ``owner``'s sink carried the frames, another live client's sink (on that client's loop) takes over.
    An ``owner`` that never registered changes nothing.

    Example:
        >>> asyncio.run(release_client_async(object()))
        >>> is_initialized()
        False
    """
    return await _runtime.release_client_async(owner)


def get_tracer() -> Any:
    """The SDK's tracer, or ``None`` before ``init_otel``."""
    return _runtime.get_tracer()


def get_meter() -> Any:
    """The SDK's meter, or ``None`` when metrics are not initialised."""
    return _runtime.get_meter()


def start_handler_span(tracer: Any, name: str, parent: Any) -> Any:
    """The SERVER span around one handler run (ours), child of ``parent``'s span: what
    ``tracer.start_span(name, context=parent, kind=SERVER, record_exception=False)`` returns, made as a
    :class:`iii.light_span.LightSpan` when that is provably the same (docs in :mod:`iii.light_span`).

    Example:
        >>> start_handler_span(None, "call f", None) is None  # telemetry off
        True
    """
    if tracer is None:
        return None
    spans = _runtime.handler_spans
    if spans is not None and tracer is _runtime.tracer and spans.usable():
        return spans.start(name, parent)
    from opentelemetry.trace import SpanKind

    return tracer.start_span(name, context=parent, kind=SpanKind.SERVER, record_exception=False)


def start_handler(tracer: Any, name: str, traceparent: str | None, baggage: str | None) -> Any:
    """``(span, context)`` for one handler run (ours): the span ``start_handler_span(tracer, name,
    extract_context(traceparent, baggage))`` starts and the context that makes it current with the caller's
    baggage, in one step; ``None`` when only those two functions can say (telemetry off, a non-default propagator
    or sampler, a ``traceparent`` not in the plain form).

    Example:
        >>> start_handler(None, "call f", None, None) is None  # telemetry off
        True
    """
    spans = _runtime.handler_spans
    if tracer is None or spans is None or tracer is not _runtime.tracer or not spans.usable():
        return None
    api = _w3c()
    if api is None:
        return None
    return api.handler_span(spans, name, traceparent, baggage)


def begin_handler(name: str, traceparent: str | None, baggage: str | None) -> tuple[Any, Any, str] | None:
    """``(span, context, response traceparent)`` for one handler run of the process's telemetry (ours): what
    :func:`start_handler` with :func:`get_tracer` returns, and :func:`span_traceparent` of its span, in one
    straight path (issue 10: a handled call made about twenty Python-level calls for these). ``None`` wherever
    :func:`start_handler` must decide (telemetry off included).

    The response ``traceparent`` is written when the span starts: it names the span, whose context never changes.

    Example:
        >>> begin_handler("call f", None, None) is None  # telemetry off
        True
    """
    spans = _runtime.handler_spans
    api = _w3c_api
    if spans is None or api is None:
        return None  # off, or _W3C not made yet: start_handler makes it
    checked, is_default = api._checked
    if api._get_textmap() is not checked:
        is_default = api.default_propagation()
    if not is_default:
        return None
    span = spans.begin(name, traceparent)
    if span is None:
        return None
    if baggage:
        return span, api.handler_context(span, traceparent, baggage), span._traceparent
    return span, api.context.Context({api._span_key: span}), span._traceparent


def get_logger(name: str = _SCOPE) -> Any:
    """An OpenTelemetry logger of the SDK's provider, or ``None`` when logs are not initialised."""
    return _runtime.get_logger(name)


def is_initialized() -> bool:
    """Whether ``init_otel`` set telemetry up (and it was not shut down since)."""
    return _runtime.is_initialized()


def _current_span_context() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def current_trace_id() -> str | None:
    """The active span's trace id as 32 hex digits, or ``None``."""
    context = _current_span_context()
    return None if context is None else format(context.trace_id, "032x")


def current_span_id() -> str | None:
    """The active span's id as 16 hex digits, or ``None``."""
    context = _current_span_context()
    return None if context is None else format(context.span_id, "016x")


class _NoopSpan:
    """Stands in for a span when tracing is off, so ``with_span`` callbacks need no branches."""

    def set_attribute(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def set_attributes(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def add_event(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def record_exception(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def end(self) -> None:
        """Ignored."""

    def is_recording(self) -> bool:
        """Never recording."""
        return False

    def get_span_context(self) -> None:
        """No context."""
        return None


async def with_span(
    name: str,
    fn: Callable[[Any], Awaitable[T]],
    *,
    kind: Any = None,
    traceparent: str | None = None,
) -> T:
    """Run ``await fn(span)`` inside a new span (a no-op span when tracing is off); errors mark the span.

    ``traceparent`` makes the span a child of that remote context instead of the current one.
    """
    return await _runtime.with_span(name, fn, kind=kind, traceparent=traceparent)


def _inject(context: Any = None) -> dict[str, str]:
    """What the global propagator writes for ``context`` (``None``: the current one)."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier, context=context)
    return carrier


#: How often, at most, a caller's baggage header that was not taken whole is said (after the first, said at once).
BAGGAGE_WARNING_INTERVAL_S: Final = 60.0
#: The W3C limit of a ``baggage`` header in bytes (OpenTelemetry's propagator drops a longer one whole).
BAGGAGE_MAX_BYTES: Final = 8192


class _BaggageWarnings(logging.Filter):
    """Holds back what OpenTelemetry's W3C baggage propagator logs while a caller's header is extracted, and says
    instead one warning at most every :data:`BAGGAGE_WARNING_INTERVAL_S`, naming sizes only.

    Why: the propagator logs at WARNING, on every call, a whole header over :data:`BAGGAGE_MAX_BYTES` and each
    list-member it drops with its text (50 calls with a 257 KB header logged 12.9 MB; 4,000 invalid members, 181
    lines per call), so any caller could flood a callee's log and put its baggage (user ids, tokens) there. What is
    extracted is unchanged: OpenTelemetry's propagator still decides, only its records are held back (those of this
    thread, while it extracts for us; anyone else's extraction logs as before).
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()  # .held: records held back in this thread's extraction, None outside one
        self._lock = threading.Lock()
        self._told, self._untold = float("-inf"), 0
        self._installed = False

    def filter(self, record: logging.LogRecord) -> bool:
        held: int | None = getattr(self._local, "held", None)
        if held is None:
            return True
        self._local.held = held + 1
        return False

    def extract(self, extract: Callable[[Any, Any], Any], header: str, ctx: Any) -> Any:
        """``extract({"baggage": header}, ctx)`` without its log records; a header over the W3C byte limit is
        refused before it (OpenTelemetry drops it whole: the same context)."""
        if len(header) > BAGGAGE_MAX_BYTES:  # (never fewer bytes than characters)
            self.tell(header)
            return ctx
        return self.quietly(extract, {"baggage": header}, ctx)

    def quietly(self, extract: Callable[..., Any], *args: Any) -> Any:
        """``extract(*args)``, holding back what the baggage propagator logs meanwhile (and telling of it)."""
        if not self._installed:
            self._installed = True
            logging.getLogger("opentelemetry.baggage.propagation").addFilter(self)
        local = self._local
        outer: int | None = getattr(local, "held", None)
        local.held = 0
        try:
            result = extract(*args)
        finally:
            held, local.held = local.held, outer
        if held:
            carrier = args[0]
            self.tell(carrier.get("baggage", "") if isinstance(carrier, Mapping) else "")
        return result

    def tell(self, header: str) -> None:
        """Count a header not taken whole; warn, with its size only, when the last warning is old enough."""
        with self._lock:
            self._untold += 1
            now = time.monotonic()
            if now - self._told < BAGGAGE_WARNING_INTERVAL_S:
                return
            self._told, untold, self._untold = now, self._untold, 0
        size = len(header.encode("utf-8", "surrogatepass"))
        members = sum(1 for member in header.split(",") if member.strip(" \t"))
        if size > BAGGAGE_MAX_BYTES:
            what = f"over the W3C limit of {BAGGAGE_MAX_BYTES} bytes: ignored whole, the handler ran without baggage"
        else:
            what = ("some list-members are not W3C key=value pairs or are past the W3C limits (180 list-members, "
                    "4096 bytes each): those were dropped, the rest kept")
        log.warning("a call's baggage header (%d bytes, %d list-members) was not taken whole, %s; %d such header(s) "
                    "counted since the previous such warning (at most one every %d s; contents are not logged)",
                    size, members, what, untold, BAGGAGE_WARNING_INTERVAL_S)


_baggage_warnings = _BaggageWarnings()


def _extract(carrier: dict[str, str]) -> Any:
    try:
        from opentelemetry.propagate import extract
    except ImportError:
        return None
    if "baggage" in carrier:
        return _baggage_warnings.quietly(extract, carrier)
    return extract(carrier)


class _W3C:
    """The OpenTelemetry pieces behind the per-call fast paths, imported once.

    Every call carries the caller's ``traceparent`` and ``baggage`` and every handler run answers with one;
    the generic ``propagate.inject`` builds a carrier through every configured propagator each time. While
    the global propagator is OpenTelemetry's default (W3C trace context + W3C baggage, in that order), the
    headers are built directly here, with the same text; any other propagator takes the generic path.
    """

    def __init__(self) -> None:
        from opentelemetry import baggage, context, propagate, trace
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from .light_span import (
            _PLAIN_TRACEPARENT,
            _ZERO_SPAN,
            _ZERO_TRACE,
            LightSpan,
            plain_traceparent,
            span_context,
            traceparent_text,
        )
        from .otel_internals import composite_parts, context_variable, runtime_context

        self._plain_form = _PLAIN_TRACEPARENT
        self._zero_ids = (_ZERO_TRACE, _ZERO_SPAN)
        self._traceparent_text = traceparent_text
        self._plain_traceparent = plain_traceparent
        self._light_span = LightSpan
        self.context = context
        self.runtime, self.variable = context_variable(context)
        self.runtime_context = runtime_context
        self._composite_parts = composite_parts
        self.trace = trace
        self.span_context = span_context
        self.get_all_baggage = baggage.get_all
        self.baggage_propagator = W3CBaggagePropagator()
        self.invalid = trace.INVALID_SPAN_CONTEXT
        self._get_textmap = propagate.get_global_textmap
        self._composite = CompositePropagator
        self._default_types = [TraceContextTextMapPropagator, W3CBaggagePropagator]
        self._checked: tuple[Any, bool] = (None, False)
        self._flags: dict[str, Any] = {}  # a traceparent's flags field -> its TraceFlags
        # The key set_span_in_context stores the span under (private to the API, so asked for once).
        (self._span_key,) = trace.set_span_in_context(trace.INVALID_SPAN, context.Context()).keys()

    def default_propagation(self) -> bool:
        """Whether the global propagator is the default W3C pair (the answer is cached per propagator)."""
        textmap = self._get_textmap()
        checked, is_default = self._checked
        if textmap is not checked:
            is_default = (
                type(textmap) is self._composite
                and [type(p) for p in self._composite_parts(textmap)] == self._default_types
            )
            self._checked = (textmap, is_default)
        return is_default

    def traceparent(self, span_context: Any) -> str | None:
        """``span_context`` as a ``traceparent`` header, exactly as ``TraceContextTextMapPropagator`` writes it."""
        if span_context == self.invalid:
            return None
        # light_span owns the SpanContext layout this reads (checked there at import, with a fallback)
        return self._traceparent_text(span_context)

    def span_traceparent(self, span: Any) -> str | None:
        """:meth:`traceparent` of ``span``'s context; a :class:`~iii.light_span.LightSpan` keeps a plain one
        (its export text then copies the ids from it, see :func:`iii.light_span.light_text`)."""
        if type(span) is not self._light_span:
            return self.traceparent(span.get_span_context())
        text: str | None = span._traceparent
        if text is None:
            context = span._context
            if context == self.invalid:
                return None
            text = self._plain_traceparent(context)
            if text is None:
                return self._traceparent_text(context)
            span._traceparent = text
        return text

    def extract(self, traceparent: str | None, baggage: str | None) -> Any:
        """The context the default propagators extract from these headers, or ``None`` for a ``traceparent``
        not in the plain ``00-<trace>-<span>-<flags>`` form (the generic path then decides, with its checks).

        Same result as ``propagate.extract``: a remote, non-recording parent span (no ``tracestate``: invocations
        carry none), then the baggage added by the W3C baggage propagator.
        """
        ctx = self.context.Context()
        if traceparent:
            span_context = self.remote_parent(traceparent)
            if span_context is None:
                return None
            ctx = self.trace.set_span_in_context(self.trace.NonRecordingSpan(span_context), ctx)
        if baggage:
            ctx = _baggage_warnings.extract(self.baggage_propagator.extract, baggage, ctx)
        return ctx

    def remote_parent(self, traceparent: str) -> Any:
        """The remote span context a plain, valid version-00 ``traceparent`` names; ``None`` for any other."""
        match = self._plain_form.fullmatch(traceparent)
        if match is None:
            return None
        trace_id, span_id, flags = match.groups()
        if trace_id == self._zero_ids[0] or span_id == self._zero_ids[1]:
            return None  # invalid: the generic path ignores it (and says so where it would)
        trace_flags = self._flags.get(flags)
        if trace_flags is None:  # at most 256 of them: two hex digits
            trace_flags = self._flags[flags] = self.trace.TraceFlags(int(flags, 16))
        return self.span_context(int(trace_id, 16), int(span_id, 16), True, trace_flags)

    def handler_span(self, spans: Any, name: str, traceparent: str | None, baggage: str | None) -> Any:
        """``(span, context)``: the span ``spans.start(name, extract(traceparent, baggage))`` starts and the
        context with it current (``set_span_in_context(span, that parent)``), made without the parent's own
        context and non-recording span; ``None`` where :meth:`extract` would be ``None``."""
        if traceparent:
            parent = self.remote_parent(traceparent)
            if parent is None:
                return None
        else:
            parent = self.invalid
        # The span processor's on_start is told no parent context: ours (the only one while light spans are
        # used) ignores it, and building it is what this path saves.
        span = spans.start_child(name, parent, None)
        return span, self.handler_context(span, traceparent, baggage)

    def handler_context(self, span: Any, traceparent: str | None, baggage: str | None) -> Any:
        """The context a handler runs in: ``set_span_in_context(span, extract(traceparent, baggage))``, made
        without the parent's own context and non-recording span."""
        if not traceparent and baggage:  # the keys in the general path's order: the parent's span comes first
            ctx = _baggage_warnings.extract(self.baggage_propagator.extract, baggage, self.context.Context())
            return self.trace.set_span_in_context(span, ctx)
        ctx = self.context.Context({self._span_key: span})  # what set_span_in_context(span, Context()) makes
        if baggage:
            ctx = _baggage_warnings.extract(self.baggage_propagator.extract, baggage, ctx)
        return ctx

    def baggage(self, ctx: Any) -> str | None:
        """The ``baggage`` header of ``ctx`` (``None`` without entries), as ``W3CBaggagePropagator`` writes it."""
        if not self.get_all_baggage(ctx):
            return None
        carrier: dict[str, str] = {}
        self.baggage_propagator.inject(carrier, ctx)
        return carrier.get("baggage")


_w3c_api: _W3C | None = None


def _w3c() -> _W3C | None:
    """The fast-path helpers, or ``None`` without OpenTelemetry or with a non-default propagator."""
    global _w3c_api
    api = _w3c_api
    if api is None:
        try:
            api = _w3c_api = _W3C()
        except ImportError:
            return None
    checked, is_default = api._checked
    if api._get_textmap() is checked:  # default_propagation's cached answer, one call less (twice per handled call)
        return api if is_default else None
    return api if api.default_propagation() else None


def trace_headers() -> tuple[str | None, str | None]:
    """``(traceparent, baggage)`` of the current context in one pass (ours): what every outgoing call carries.

    Same values as :func:`inject_traceparent` and :func:`inject_baggage`, without running the propagators
    twice.

    Example:
        >>> trace_headers()
        (None, None)
    """
    api = _w3c_api
    if api is not None and api._checked[1] and api._get_textmap() is api._checked[0]:
        pass  # _w3c(), inline (a call less per outgoing call)
    else:
        api = _w3c()
        if api is None:
            carrier = _inject()
            return carrier.get("traceparent"), carrier.get("baggage")
    # context.get_current(), on its variable while the runtime context is the default one (two calls less)
    variable = api.variable
    ctx = variable.get() if variable is not None and api.runtime_context() is api.runtime \
        else api.context.get_current()
    if not ctx:  # the empty context (a call made outside any span, no baggage): what the propagators write for it
        return None, None
    return api.traceparent(api.trace.get_current_span(ctx).get_span_context()), api.baggage(ctx)


def span_traceparent(span: Any) -> str | None:
    """The ``traceparent`` naming ``span`` (ours): what :func:`inject_traceparent` returns while ``span`` is
    the current one.

    Example:
        >>> span_traceparent(None) is None
        True
    """
    if span is None:
        return None
    api = _w3c()
    if api is None:
        # The global propagator's header with span current: a handler's context is detached when its answer's
        # header is written, so the current context alone would name the caller's span (or none).
        try:
            from opentelemetry.trace import set_span_in_context
        except ImportError:
            return None
        return _inject(set_span_in_context(span)).get("traceparent")
    return api.span_traceparent(span)


def inject_traceparent() -> str | None:
    """The current trace context as a W3C ``traceparent`` header, or ``None`` without an active span."""
    return _inject().get("traceparent")


def extract_traceparent(traceparent: str) -> Any:
    """An OpenTelemetry context whose parent is the given ``traceparent`` (``None`` without OTel)."""
    return _extract({"traceparent": traceparent})


def inject_baggage() -> str | None:
    """The current baggage as a W3C ``baggage`` header, or ``None`` when there is none."""
    return _inject().get("baggage")


def extract_baggage(baggage: str) -> Any:
    """An OpenTelemetry context carrying the given ``baggage`` header (``None`` without OTel)."""
    return _extract({"baggage": baggage})


def extract_context(traceparent: str | None = None, baggage: str | None = None) -> Any:
    """An OpenTelemetry context from both headers; either may be missing (``None`` without OTel)."""
    # Every handled call extracts both headers: with the default propagators, parse them directly (same context).
    api = _w3c()
    if api is not None:
        ctx = api.extract(traceparent, baggage)
        if ctx is not None:
            return ctx
    carrier: dict[str, str] = {}
    if traceparent:
        carrier["traceparent"] = traceparent
    if baggage:
        carrier["baggage"] = baggage
    return _extract(carrier)


def get_baggage_entry(key: str) -> str | None:
    """One baggage value of the current context, or ``None``."""
    try:
        from opentelemetry import baggage
    except ImportError:
        return None
    value = baggage.get_baggage(key)
    return None if value is None else str(value)


def set_baggage_entry(key: str, value: str) -> Any:
    """A new context with ``key=value`` added to the current baggage (attach it to make it current)."""
    try:
        from opentelemetry import baggage
    except ImportError:
        return None
    return baggage.set_baggage(key, value)


def remove_baggage_entry(key: str) -> Any:
    """A new context without ``key`` in its baggage (attach it to make it current)."""
    try:
        from opentelemetry import baggage
    except ImportError:
        return None
    return baggage.remove_baggage(key)


def get_all_baggage() -> dict[str, str]:
    """Every baggage entry of the current context."""
    try:
        from opentelemetry import baggage
    except ImportError:
        return {}
    return {key: str(value) for key, value in baggage.get_all().items()}
