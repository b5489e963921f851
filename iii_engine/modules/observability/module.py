"""``modules::observability::OtelModule``: keeps what workers report (spans, logs, metrics), records the engine's
own call spans, and serves it all back through production's ``engine::*`` functions and the ``log`` trigger.

Telemetry frames reach :meth:`OtelModule.ingest` from the worker socket; they are queued (bounded in frames and
bytes, and refused above ``max_frame_bytes``) and parsed by a background task (a frame whose parse would hold more than
``max_frame_parse_bytes`` is not parsed), so a worker that floods telemetry cannot grow the engine: what does not fit
is dropped and counted in ``engine::health::check``. It can still delay calls a little: a frame's entries are
converted, then stored, in slices of :data:`CONVERT_SLICE_S` with the loop free between them, but orjson's parse
holds the GIL even in a thread. One 3.5 MiB ``MTRC`` frame of 10,000 metrics (~110 ms of orjson, ~420 ms of
conversion, ~100 ms of storing) held the loop 481 ms when converted in one go; with the conversion sliced another
worker's call waited at most ~140 ms; with the storing sliced too (a 4.2 MiB frame of 10,000 metrics: its one ~65-75
ms store hold gone) what is left is the parse's, ~110-150 ms on a loaded 2-core machine.

Example (engine configuration):
    >>> OtelModule.class_names
    ('modules::observability::OtelModule',)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.iii_types import TriggerInfo
from iii.loss_log import BurstLog, LossLog, counts_text, latest_tail
from iii.protocol.worker_session import OFFLOOP_PARSE_BYTES
from iii.wire import dumps, loads

from ...config import DEFAULT_CONTROL_MAX_MESSAGE_SIZE, EngineConfig
from ...limits import SKIP_LOG_INTERVAL_S
from ...workers import frame_bytes
from ..base import BuiltinFunction, EncodedResult, EngineError, EngineModule, EngineServices, InvocationContext
from ..health import UNHEALTHY, Component, modules_health
from .alerts import AlertManager
from .exporter import DROP_LOG_INTERVAL_S, SPAN_BATCH_SIZE, OtlpForwarder, RecordBatch, http_failure
from .feedback import LogTriggerCalls, untraced
from .otlp import (
    CostlyFrameError,
    TelemetryFormatError,
    check_parse_cost,
    count_entries,
    item_budget,
    iter_logs,
    iter_metrics,
    iter_spans,
    optional_id,
)
from .queries import (
    METRICS_KEYS,
    METRICS_ORDER,
    TREE_SLICE_S,
    Paging,
    adopted_roots,
    aggregate,
    answer_json,
    check_keys,
    encode_entries,
    encode_tree,
    logs_query,
    page_of,
    percentile,
    run_sliced,
    select,
    severity_of,
    severity_range,
    trace_tree_async,
    traces_query,
)
from .settings import ObservabilitySettings
from .stores import Counters, LogStore, MetricStore, SpanStore, WorkerCounts
from .urls import scrubbed, shown_url

__all__ = ["OtelModule"]


log = logging.getLogger(__name__)

ENGINE_VERSION = "0.10.0"
# How long one alert webhook delivery may take, all attempts and pauses included.
WEBHOOK_BUDGET_S = 30.0
ALERT_ACTION_MIN_INTERVAL_S = 1.0
"""A rule's function or webhook action runs at most once per this many seconds, whatever its ``cooldown_seconds``
(0 included); a trigger within it is counted in ``alert_actions_throttled``. Why: an action whose call makes the
rule fire again (a function that calls ``engine::alerts::evaluate``, or one feeding the metric the rule watches)
ran without end at cooldown 0: 364,835 invocations in 15 s, a core busy and every stored trace evicted."""
ALERT_DELIVERIES_DEGRADED_AFTER = 3
"""``engine::health::check`` says ``degraded`` (component ``alert_deliveries``) once this many webhook deliveries of
one rule in a row failed, each after its retries (before, health stayed ``healthy`` while every alert was lost). Counted
per rule: with one count for all, each success of a working rule reset it while another rule lost every alert."""
ALERT_DELIVERIES_DEGRADED_FOR_S = 300.0
"""A rule's failed deliveries make health ``degraded`` until one succeeds or none failed for this many seconds: an
alert that resolved delivers nothing more, and its failures kept the engine ``degraded`` for good. A failure after
such a quiet spell starts a new count."""
ALERT_LOG_BURST = 10
"""Alert lines (triggered, webhook skipped) logged one by one per ``SKIP_LOG_INTERVAL_S``; the rest are counted."""
ECHO_LOG_BURST = 100
ECHO_LOG_INTERVAL_S = 1.0
"""Log records echoed to the engine's log (``logs_console_output``) one line each: at most ``ECHO_LOG_BURST`` per
``ECHO_LOG_INTERVAL_S`` (a fixed window: up to twice that across a window's edge), the rest counted in one line per
``SKIP_LOG_INTERVAL_S``."""
ECHO_SERVICE_CHARS = 200
ECHO_BODY_CHARS = 1000
"""An echo line holds at most this much of a record's ``service.name`` and of its body (or an ``engine::log::*``
message): a line bound, not only a count, bounds what the echo writes (with the service name unclipped, one worker's
1 MB ``service.name`` made 100 echo lines a second 100 MB a second on stderr)."""
#: seconds a connection that sent a telemetry frame counts as sending, for the shares of the ingest queue
SOURCE_ACTIVE_S = 1.0
CONVERT_SLICE_S = 0.005
"""The ingest task converts (then stores) a frame's entries this long at most before it lets the event loop run
other work."""
STORE_CHUNK = 256
"""Entries stored in one call between two looks at the clock (storing one metric takes ~7 µs)."""
_SEVERITIES = {"trace": (1, "TRACE"), "debug": (5, "DEBUG"), "info": (9, "INFO"), "warn": (13, "WARN"),
               "error": (17, "ERROR")}
_NOT_ENABLED = EngineError(
    "memory_exporter_not_enabled",
    "In-memory span storage is not available. Set exporter: memory or both in config.")
_SIGNALS = {"OTLP": "traces", "MTRC": "metrics", "LOGS": "logs"}
# What an answer leaves for the invocationresult frame around it (its invocation id apart) and for the fields written
# after its lists (truncated, next_offset, timestamp...).
_FRAME_BYTES = 4096
_LOG_KEYS = ("timestamp_unix_nano", "observed_timestamp_unix_nano", "severity_number", "severity_text", "body",
             "attributes", "trace_id", "span_id", "resource", "service_name", "instrumentation_scope_name",
             "instrumentation_scope_version")


# Set while the module fires a log trigger's calls: the call's task is created within and inherits it, so
# call_started (run in that task) knows the call is a log trigger's and starts it in a marked trace.
_FIRING_LOG_TRIGGER: ContextVar[bool] = ContextVar("firing_log_trigger", default=False)


def _now_ns() -> int:
    return time.time_ns()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _object(data: Any, function_id: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: expected an object")
    return data


def _no_fields(data: Any, function_id: str) -> None:
    """Refuse a clear given any field: it clears everything, and before, ``{"trace_id": ...}`` or
    ``{"older_than_ms": ...}`` looked like a filter and wiped the whole store."""
    if data is not None:
        check_keys(_object(data, function_id), (), function_id)


def _check_query(function_id: str, start: Any, end: Any, name: Any) -> None:
    """Refuse a metrics query whose times are not numbers >= 0 or whose metric name is not a string (before, a
    number as metric_name silently matched nothing)."""
    for key, value in (("start_time", start), ("end_time", end)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
            raise EngineError("deserialization_error",
                              f"Failed to deserialize input for {function_id}: {key} must be a number >= 0")
    if name is not None and not isinstance(name, str):
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: metric_name must be a string")


def _in_slices(entries: list[dict[str, Any]], store: Callable[[list[dict[str, Any]]], object],
               slice_s: float | None) -> Iterator[None]:
    """``store`` ``entries`` :data:`STORE_CHUNK` at a time, pausing (a ``yield``) each time ``slice_s`` of storing
    passed; all in one call when ``slice_s`` is ``None``.

    Why: a frame's entries are stored once it converted whole (a frame refused midway stores nothing); stored in one
    call, 10,000 metrics held the loop ~70 ms more after the conversion's slices.

    Example:
        >>> got: list[int] = []
        >>> pauses = list(_in_slices([{"n": n} for n in range(600)], lambda part: got.append(len(part)), 0.0))
        >>> got, len(pauses)
        ([256, 256, 88], 3)
    """
    if slice_s is None:
        store(entries)
        return
    began = time.perf_counter()
    for start in range(0, len(entries), STORE_CHUNK):
        store(entries[start:start + STORE_CHUNK])
        if time.perf_counter() - began >= slice_s:
            yield
            began = time.perf_counter()


def echo_line(service_name: str, body: str) -> str:
    """The console echo of a worker's log record: ``[service] body``, each part clipped (:data:`ECHO_SERVICE_CHARS`,
    :data:`ECHO_BODY_CHARS`), so a line holds at most ~1.2 K characters whatever the record.

    Example:
        >>> echo_line("billing", "paid"), len(echo_line("s" * 10**6, "b" * 10**6))
        ('[billing] paid', 1203)
    """
    return f"[{service_name[:ECHO_SERVICE_CHARS]}] {body[:ECHO_BODY_CHARS]}"


def _console_level(severity_number: int) -> int:
    if 1 <= severity_number <= 8:
        return logging.DEBUG
    if 13 <= severity_number <= 16:
        return logging.WARNING
    if 17 <= severity_number <= 24:
        return logging.ERROR
    return logging.INFO


# The OpenTelemetry propagator's form (opentelemetry.trace.propagation.tracecontext), which the SDKs read the
# traceparent the engine sends with a call by: the engine must parent its span to a context they take, or the trace
# splits in two. Before, int(x, 16) took upper case, "_" and "+" in the ids, and version ff.
_TRACEPARENT = re.compile("^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
_TRACEPARENT_MAX_CHARS = 512


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """``(trace_id, parent_span_id)`` of a W3C ``traceparent``, or ``None`` when absent or malformed, as the
    OpenTelemetry propagator reads it: lower-case hex, not version ``ff``, no field after the four of version ``00``,
    ids not all zero.

    Example:
        >>> parse_traceparent("00-" + "a" * 32 + "-" + "b" * 16 + "-01")[1]
        'bbbbbbbbbbbbbbbb'
        >>> [parse_traceparent(v) for v in ("ff-" + "a" * 32 + "-" + "b" * 16 + "-01",
        ...                                 "00-" + "A" * 32 + "-" + "b" * 16 + "-01",
        ...                                 "00-" + "a" * 32 + "-" + "b" * 15 + "_-01")]
        [None, None, None]
    """
    if not value or len(value) > _TRACEPARENT_MAX_CHARS:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id


def parse_baggage(value: str | None) -> dict[str, str]:
    """The entries of a W3C ``baggage`` header (percent-decoded; properties dropped).

    Example:
        >>> parse_baggage("tenant=acme, user=a%20b;prop=1")
        {'tenant': 'acme', 'user': 'a b'}
    """
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for member in (value or "").split(","):
        key, sep, rest = member.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(rest.split(";", 1)[0].strip())
    return out


class ObservabilityCore(EngineServices, Protocol):
    """What the module needs beyond :class:`EngineServices`: the engine's configuration (its ``max_message_size``
    bounds a query's answer) and its worker events (``engine_metrics.workers``)."""

    config: EngineConfig

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(event, worker_id)`` on worker connects, disconnects and metadata updates."""


@dataclass
class _Call:
    function_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    attributes: list[list[str]]
    #: the worker a log trigger's call went to (None: not a log trigger's call)
    log_trigger_worker: str | None = None


class OtelModule(EngineModule):
    """Engine module keeping and serving telemetry (production's observability module)."""

    name: ClassVar[str] = "observability"
    class_names: ClassVar[tuple[str, ...]] = ("modules::observability::OtelModule",)
    enabled_by_default: ClassVar[bool] = False

    def __init__(self, services: ObservabilityCore, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.core = services
        self.settings = ObservabilitySettings.from_config(self.config)
        #: the largest answer a query gives, in bytes of JSON (the engine's max_message_size, read at start)
        self.max_answer_bytes = DEFAULT_CONTROL_MAX_MESSAGE_SIZE
        self.rules = list(self.settings.alerts)
        s = self.settings
        self.logs = LogStore(s.logs_max_count, s.logs_max_bytes)
        self.spans: SpanStore | None = SpanStore(s.memory_max_spans, s.memory_max_bytes) if s.keeps_spans else None
        self.metrics = MetricStore(max_entries=s.metrics_max_count, retention_s=s.metrics_retention_seconds,
                                   max_bytes=s.metrics_max_bytes)
        self.counters = Counters()
        self.workers = WorkerCounts()
        self.alerts: AlertManager | None = AlertManager(self.rules) if self.rules else None
        self._queue: asyncio.Queue[tuple[str, bytes, str | None]] = asyncio.Queue(self.settings.ingest_queue_frames)
        # Per connection: frames and bytes it has queued, and when it last sent (see ingest)
        self._source_queued: dict[str, list[int]] = {}
        self._source_seen: dict[str, float] = {}
        self._sources_pruned_at = 0.0
        # Each log trigger's severity numbers (first, last), None for every entry.
        self._log_triggers: dict[str, tuple[int, int] | None] = {}
        self._trigger_targets: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ingest_task: asyncio.Task[None] | None = None
        #: set by the stop: frames coming later are dropped and counted
        self._closed = False
        # (frames, bytes) of the frame the stop's cancel cut mid-way, counted as dropped with the queued ones
        self._cut_at_stop = (0, 0)
        # set once the frame being ingested converted whole and was exported: its entries are being stored, and a
        # cancel then finishes the storing rather than leave the frame partly stored (see _ingest_frame)
        self._storing_entries = False
        self._background: set[asyncio.Task[Any]] = set()
        self._probing: asyncio.Task[dict[str, Component]] | None = None  # see _modules_health
        self.forwarder: OtlpForwarder | None = None
        # the engine's own spans and log entries, gathered into requests (one request per record was ~330 a second)
        self._span_batch: RecordBatch | None = None
        self._log_batch: RecordBatch | None = None
        # Webhook deliveries: at most one per rule at a time, each given up after webhook_budget_s in all.
        self.webhook_budget_s = WEBHOOK_BUDGET_S
        self._webhooks: dict[str, asyncio.Task[None]] = {}
        # Every delivery not ended yet, whenever it started: the stop counts each it cuts in webhook_failed (one
        # started during the stop's wait was cancelled with _background and counted nowhere).
        self._webhook_runs: set[asyncio.Task[None]] = set()
        self.webhook_sent = 0
        self.webhook_failed = 0
        self.webhook_skipped = 0
        #: actions not run for coming within ALERT_ACTION_MIN_INTERVAL_S of the rule's previous one
        self.alert_actions_throttled = 0
        self._action_at: dict[str, float] = {}  # rule name -> time.monotonic() of its last action run
        #: rule name -> (its webhook deliveries that failed since its last success, time.monotonic() of the latest
        #: failure); and why the latest delivery of any rule failed
        self._delivery_failures: dict[str, tuple[int, float]] = {}
        self._webhook_problem: str | None = None
        # Alert lines rate-limited: ALERT_LOG_BURST of each SKIP_LOG_INTERVAL_S get a line each, the rest are
        # counted in one line per interval. Before, one line per event: a worker calling engine::alerts::evaluate
        # in a loop against rules with cooldown_seconds 0 wrote 274,402 lines in 20 s.
        self._alert_log = BurstLog(ALERT_LOG_BURST, SKIP_LOG_INTERVAL_S, log.warning,
                                   LossLog(self._log_alert_counts, SKIP_LOG_INTERVAL_S))
        # The console echo of log records, rate-limited the same way: one worker's LOGS frames were 312,011 lines in
        # 15 s, and with a slow stderr another worker's engine::health::check waited 1.6 s (median).
        self._echo_log = BurstLog(ECHO_LOG_BURST, ECHO_LOG_INTERVAL_S, log.info,
                                  LossLog(self._log_echo_counts, SKIP_LOG_INTERVAL_S))
        self.dropped_frames = 0
        self._queued_bytes = 0
        self._drop_logged_at = self._malformed_logged_at = self._cut_logged_at = -DROP_LOG_INTERVAL_S
        self.dropped_entries = 0
        self.dropped_items = 0
        self.malformed_frames = 0
        self.ingested_frames = 0
        # Trace ids of the calls fired for log triggers carry a mark keyed by this (see _marked_trace_id).
        self._trace_mark_key = os.urandom(16)
        # ... and where and when they were in flight, for records that carry no trace context (see feedback.py)
        self._log_trigger_calls = LogTriggerCalls()
        #: log records that fired no log trigger for being written while handling one (counted per trigger matched)
        self.log_trigger_feedback = 0
        #: of those, the ones without trace context (the backstop's, see _feedback_untraced): what it cost shows here
        self.log_trigger_feedback_untraced = 0

    # -- life cycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the functions and the ``log`` trigger type; start ingestion, retention and alerts."""
        s = self.settings
        self.max_answer_bytes = self.core.config.max_message_size
        if s.exports or s.exports_logs:
            self.forwarder = OtlpForwarder(s.endpoint, stop_timeout_s=s.export_stop_timeout_ms / 1000)
            self.forwarder.start()
            # one interval for both signals: logs_flush_interval_ms is the only delay the config names
            self._span_batch = RecordBatch(self.forwarder.submit, "traces", self._span_request,
                                           size=SPAN_BATCH_SIZE, interval_s=s.logs_flush_interval_ms / 1000)
            self._log_batch = RecordBatch(self.forwarder.submit, "logs", self._log_request,
                                          size=s.logs_batch_size, interval_s=s.logs_flush_interval_ms / 1000)
        for level in _SEVERITIES:
            self._register(f"engine::log::{level}", self._make_log(level), f"Store a {level} log entry")
        self._register("engine::logs::list", self._logs_list, "List stored log entries")
        self._register("engine::logs::clear", self._logs_clear, "Clear stored log entries")
        self._register("engine::traces::list", self._traces_list, "List root spans of stored traces")
        self._register("engine::traces::tree", self._traces_tree, "A trace as a tree of spans")
        self._register("engine::traces::clear", self._traces_clear, "Clear stored spans")
        self._register("engine::metrics::list", self._metrics_list, "Engine counters and stored SDK metrics")
        self._register("engine::rollups::list", self._rollups_list, "Metric rollups")
        self._register("engine::health::check", self._health, "Health of the observability stores")
        self._register("engine::alerts::list", self._alerts_list, "State of the configured alerts")
        self._register("engine::alerts::evaluate", self._alerts_evaluate, "Evaluate the alert rules now")
        self._register("engine::sampling::rules", self._sampling_rules, "Configured sampling rules")
        self._register("engine::baggage::get", self._baggage_get, "One baggage entry of the calling context")
        self._register("engine::baggage::set", self._baggage_set, "Baggage cannot be set from here (no-op)")
        self._register("engine::baggage::get_all", self._baggage_get_all, "The baggage of the calling context")
        self.services.register_trigger_type("log", "Log event trigger", self)
        self.services.add_telemetry_listener(self.ingest)
        # (they read 0, 0, 0 for good: 5 workers connected and engine_metrics said active 0)
        self.core.add_worker_listener(self.workers.event)
        self.services.set_invocation_observer(self)
        loop = asyncio.get_running_loop()
        self._ingest_task = loop.create_task(self._ingest_loop(), name="otel-ingest")
        self._tasks = [self._ingest_task, loop.create_task(self._retention_loop(), name="otel-retention")]
        if self.alerts is not None:
            self._tasks.append(loop.create_task(self._alert_loop(), name="otel-alerts"))

    async def stop(self) -> None:
        """Stop the background tasks, ingest the frames still queued and let running alert webhooks end, then flush
        the exporter: all within one ``export_stop_timeout_ms``. What the bound leaves (frames not ingested, webhooks
        not delivered, exports not posted) is counted (``dropped_frames``, ``webhook_failed``, ``export_dropped``) and
        logged in one line each; so is what comes during the stop's last steps (``engine::log::*`` records and call
        spans while the exporter closes, webhooks alerts start) and after it. The counts of echo and alert lines not
        logged one by one are logged last, with everything the stop itself suppressed."""
        deadline = time.monotonic() + self.settings.export_stop_timeout_ms / 1000
        ingest = self._ingest_task
        for task in self._tasks:
            if task is not ingest:
                task.cancel()
        # Before, the ingest task was cancelled with the rest: 34 of 60 accepted frames were neither stored, exported
        # nor counted anywhere. Now it drains the queue while the forwarder posts, until the deadline.
        webhooks = [task for task in self._webhooks.values() if not task.done()]
        waits: list[asyncio.Future[Any]] = list(webhooks)
        if ingest is not None and not ingest.done():
            waits.append(asyncio.ensure_future(self._queue.join()))
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - time.monotonic()))
        # a frame coming after this is dropped and counted (see ingest), and so is a webhook an alert starts
        self._closed = True
        # the deliveries under way now, those started during the wait included (before, only the ones running when
        # the stop began were counted when cut)
        webhooks = [task for task in self._webhook_runs if not task.done()]
        for task in self._tasks + list(self._background) + waits:
            task.cancel()
        for task in self._tasks + list(self._background) + waits:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._drop_queued_at_stop()
        cut = [task for task in webhooks if task.cancelled()]
        if cut:
            self.webhook_failed += len(cut)
            log.warning("%d alert webhook delivery(ies) still running at the engine's stop were not completed within "
                        "%g s (export_stop_timeout_ms); counted in webhook_failed", len(cut),
                        self.settings.export_stop_timeout_ms / 1000)
        batches = [batch for batch in (self._span_batch, self._log_batch) if batch is not None]
        for batch in batches:  # what is gathered goes to the queue, delivered within export_stop_timeout_ms
            batch.flush()
        if self.forwarder is not None:
            await self.forwarder.close(max(0.0, deadline - time.monotonic()))
        # Records added while the exporter closed (engine::log::* calls and call spans go on until the engine
        # releases the module) go to the closed exporter, which counts them as dropped, and so does every later one.
        for batch in batches:
            batch.close()
        # Last: the echo lines and alert lines suppressed during the stop are counted in these (closed at the stop's
        # start, ~17,300 echoes of engine::log::* calls made while the exporter closed were never reported).
        self._alert_log.losses.close()
        self._echo_log.losses.close()

    def _drop_queued_at_stop(self) -> None:
        """Count the frames the stop did not ingest (still queued, or cut mid-way) as dropped, in one line."""
        frames, size = self._cut_at_stop
        while not self._queue.empty():
            _, body, _ = self._queue.get_nowait()
            self._queue.task_done()
            frames, size = frames + 1, size + len(body)
        self._queued_bytes = 0
        self._source_queued.clear()
        self._cut_at_stop = (0, 0)
        if frames:
            self.dropped_frames += frames
            log.warning("%d telemetry frame(s) (%d bytes) not ingested within %g s (export_stop_timeout_ms) of the "
                        "engine's stop; counted in dropped_frames (%d so far)", frames, size,
                        self.settings.export_stop_timeout_ms / 1000, self.dropped_frames)

    def _register(self, function_id: str, handler: Any, description: str) -> None:
        self.services.register_function(BuiltinFunction(function_id, handler, description))

    # -- ingestion -------------------------------------------------------------------------------------------

    def ingest(self, kind: str, body: bytes, source: str | None = None) -> None:
        """A telemetry frame from a worker (``OTLP``, ``MTRC`` or ``LOGS`` prefix stripped; ``source``: the id of
        the worker's connection, when the engine says); never blocks.

        While several connections send (each within the last :data:`SOURCE_ACTIVE_S`) and the queue is half full
        (frames or bytes), each may hold at most its share of the queue (``ingest_queue_frames`` and
        ``ingest_queue_bytes`` over their number; a connection with nothing queued always one frame): before, one
        worker's flood filled the queue and the frames of every other worker were dropped with its own (a
        well-behaved worker's 100 log records: 36 stored)."""
        s = self.settings
        size = len(body)
        held: list[int] | None = None
        over_share = False
        if source is not None:
            now = time.monotonic()
            seen = self._source_seen
            seen[source] = now
            if now - self._sources_pruned_at >= SOURCE_ACTIVE_S:
                self._sources_pruned_at = now
                for gone in [other for other, at in seen.items() if now - at > SOURCE_ACTIVE_S]:
                    del seen[gone]
            held = self._source_queued.get(source)
            sending = len(seen)
            # Only once the queue is half full (frames or bytes): enforced on an idle queue, 200 workers sending
            # twice a second each left a share of 5 frames, and one SDK's flushed batch of 51 frames lost 46.
            pressed = (2 * self._queue.qsize() >= s.ingest_queue_frames
                       or 2 * (self._queued_bytes + size) > s.ingest_queue_bytes)
            over_share = pressed and sending > 1 and held is not None and (
                held[0] + 1 > s.ingest_queue_frames // sending or held[1] + size > s.ingest_queue_bytes // sending)
        # Bytes as well as frames: ingest_queue_frames x max_frame_bytes alone allowed 8 GiB to wait.
        if (self._closed or over_share or size > s.max_frame_bytes
                or self._queued_bytes + size > s.ingest_queue_bytes or self._queue.full()):
            self.dropped_frames += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:  # one line per interval, not one per frame
                self._drop_logged_at = now
                whose = "" if source is None else f" from worker {source}"
                why = (f"past its share of the ingest queue ({held[0] if held else 0} frames, "
                       f"{held[1] if held else 0} bytes queued; {len(self._source_seen)} workers sending)"
                       if over_share else f"queue: {self._queue.qsize()} frames, {self._queued_bytes} bytes")
                log.warning("telemetry frame of %d bytes%s dropped (%s); %d dropped so far", size, whose, why,
                            self.dropped_frames)
            return
        self._queue.put_nowait((kind, body, source))
        self._queued_bytes += size
        if source is not None:
            if held is None:
                self._source_queued[source] = [1, size]
            else:
                held[0] += 1
                held[1] += size

    async def _ingest_loop(self) -> None:
        while True:
            kind, body, source = await self._queue.get()
            ingested = self.ingested_frames
            try:
                await self._ingest_frame(kind, body, source)
            except asyncio.CancelledError:
                if self.ingested_frames == ingested:  # the stop's bound ended it unstored: counted as dropped
                    self._cut_at_stop = (1, len(body))
                raise
            finally:
                self._queue.task_done()  # the stop waits for the queue's join
                # A frame's bytes count against ingest_queue_bytes until it is stored, and go (with its parsed form,
                # a local of _ingest_frame) before the next frame is awaited: held until the next one was parsed,
                # two parsed frames were alive at once (2 x 37 MB for 3.7 MB of log records of 200 attributes).
                self._queued_bytes -= len(body)
                held = self._source_queued.get(source) if source is not None else None
                if held is not None:
                    held[0] -= 1
                    held[1] -= len(body)
                    if not held[0]:
                        del self._source_queued[source]  # type: ignore[arg-type]  # held: source is not None
                del body
            # one frame at a time, then let calls run: a flood of frames cannot hold the loop
            await asyncio.sleep(0)

    async def _ingest_frame(self, kind: str, body: bytes, source: str | None = None) -> None:
        try:
            # A big frame is parsed in a thread: the parse (orjson plus the one JSON policy's depth and digit
            # scans) of a few MiB held the engine's loop for a second or more. The thread does not free the loop
            # for the whole parse: orjson holds the GIL while it parses (~110 ms of a 3.5 MiB frame), only the
            # Python-level scans around it take turns with the loop. The structure count that bounds the parse's
            # memory runs with it, in the thread for a big frame.
            parse = self._parse
            frame = parse(body) if len(body) <= OFFLOOP_PARSE_BYTES else await asyncio.to_thread(parse, body)
            # converted a slice at a time, the loop free between slices: one 3.5 MiB frame of 10,000 metrics
            # was converted in one go, ~420 ms during which no call was answered
            self._storing_entries = False
            storing = self._storing(kind, body, frame, CONVERT_SLICE_S, source)
            try:
                for _ in storing:
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                # The stop's bound. A frame still converting stores nothing and is counted as dropped; one already
                # exported and partly stored is stored whole, in one go (at most max_frame_entries entries: ~100 ms
                # for 10,000), and counted as ingested. Before, it was both partly stored and counted as dropped.
                if self._storing_entries:
                    for _ in storing:
                        pass
                raise
            finally:
                storing.close()  # cancelled midway (the engine's stop): its budget is reset in this task's context
        except CostlyFrameError as exc:
            self.dropped_frames += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:
                self._drop_logged_at = now
                log.warning("dropped a %s telemetry frame unparsed (max_frame_parse_bytes): %s; %d dropped so far",
                            kind, exc, self.dropped_frames)
        except (TelemetryFormatError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            self.malformed_frames += 1
            now = time.monotonic()
            if now - self._malformed_logged_at >= DROP_LOG_INTERVAL_S:  # a flood of garbage is not a log flood
                self._malformed_logged_at = now
                log.warning("dropped a malformed %s telemetry frame (%d so far): %s", kind, self.malformed_frames,
                            str(exc)[:200])
        except Exception as exc:
            # Whatever a frame does, this task must live on: before, one OverflowError ended it and every later
            # frame of every worker sat in the queue until the queue was full, then was dropped.
            self.malformed_frames += 1
            log.error("dropped a %s telemetry frame that failed to store: %s: %s", kind, type(exc).__name__,
                      str(exc)[:200])

    def _parse(self, body: bytes) -> Any:
        check_parse_cost(body, self.settings.max_frame_parse_bytes)  # before the parse holds what it estimates
        return loads(body)

    def _store_frame(self, kind: str, body: bytes, frame: Any) -> None:
        """Convert and store a parsed frame in one go (:meth:`_storing`, which the ingest task runs in slices)."""
        for _ in self._storing(kind, body, frame, None):
            pass

    def _storing(self, kind: str, body: bytes, frame: Any, slice_s: float | None,
                 source: str | None = None) -> Generator[None, None, None]:
        """Convert and store a parsed frame (``source``: the sending connection's id, when known), pausing (a
        ``yield``) each time ``slice_s`` of converting passed; its entries are stored at the end, so a frame refused
        midway stores nothing, as before."""
        with item_budget(self.settings.max_frame_items) as counts:
            # the budget is a context variable of the ingest task: its pauses leave other tasks' contexts alone
            yield from self._convert(kind, body, frame, slice_s, counts, source)
        if counts[1]:
            self.dropped_items += counts[1]
            self._warn_cut("a %s telemetry frame held more than max_frame_items (%d): %d items (attributes, events, "
                           "links, points) dropped (%d so far)", kind, self.settings.max_frame_items, counts[1],
                           self.dropped_items)
        if counts[2]:
            self.dropped_entries += counts[2]
            self._warn_cut("a %s telemetry frame held %d metric(s) with no data kind this engine knows (gauge, sum, "
                           "histogram, exponentialHistogram, summary): not stored, counted in dropped_entries "
                           "(%d so far)", kind, counts[2], self.dropped_entries)
        self.ingested_frames += 1

    def _convert(self, kind: str, body: bytes, frame: Any, slice_s: float | None,
                 counts: list[int], source: str | None = None) -> Iterator[None]:
        """Convert the entries of a frame (``counts``: its :func:`~.otlp.item_budget`), export it, then store them
        (:attr:`_storing_entries` set from the export on)."""
        # The stores charge each entry what it holds in memory: a share of the frame's JSON bytes was a third to a
        # fifth of it for entries of many small attributes, so the byte bounds held several times themselves.
        limit = self.settings.max_frame_entries
        if kind == "OTLP":
            spans: list[dict[str, Any]] = []
            for part in iter_spans(frame, limit, slice_s):
                spans += part
                yield
            self._count_cut(frame, kind, len(spans))
            self._storing_entries = True
            self._forward(kind, body, frame)
            if self.spans is not None and spans:
                yield from _in_slices(spans, self.spans.add_all, slice_s)
        elif kind == "MTRC":
            metrics: list[dict[str, Any]] = []
            for part in iter_metrics(frame, _now_ns(), limit, slice_s):
                metrics += part
                yield
            # the metrics of no known kind it passed are counted apart (counts[2]): before, past max_frame_entries
            # they were counted twice (15 not stored, dropped_entries 20)
            self._count_cut(frame, kind, len(metrics) + counts[2])
            self._storing_entries = True
            self._forward(kind, body, frame)
            # names charged to the sending connection, which the sender cannot choose (a resource's service name
            # it can: made-up names spread over made-up services made a real service the one evicted first)
            yield from _in_slices(metrics, functools.partial(self.metrics.add, owner=source), slice_s)
        elif kind == "LOGS":
            entries: list[dict[str, Any]] = []
            for part in iter_logs(frame, limit, slice_s):
                entries += part
                yield
            self._count_cut(frame, kind, len(entries))
            self._storing_entries = True
            self._forward(kind, body, frame)
            yield from _in_slices(entries, self._add_logs, slice_s)

    def _add_logs(self, entries: list[dict[str, Any]]) -> None:
        for entry, size in zip(entries, self.logs.sizes(entries), strict=True):
            if self.settings.logs_console_output:
                self._echo(entry["severity_number"], echo_line(entry["service_name"], entry["body"]),
                           "worker log records")
            self._add_log(entry, size)

    def _echo(self, severity_number: int, line: str, kind: str) -> None:
        """Echo a log record to the engine's log, within :data:`ECHO_LOG_BURST` per :data:`ECHO_LOG_INTERVAL_S`."""
        if self._echo_log.take(kind, line[:200]):
            log.log(_console_level(severity_number), "%s", line)

    def _log_echo_counts(self, counts: Mapping[str, int], latest: str | None) -> None:
        log.warning("logs_console_output: %s not echoed (past %d lines per %g s)%s", counts_text(counts),
                    ECHO_LOG_BURST, ECHO_LOG_INTERVAL_S, latest_tail(latest))

    def _forward(self, kind: str, body: bytes, frame: Any) -> None:
        """Export a worker's frame as it came, once it converted (a frame refused as malformed is not exported),
        with its record count: a failed or dropped export counts the records lost, not only the request."""
        if self.forwarder is not None and ((kind == "LOGS" and self.settings.exports_logs)
                                           or (kind != "LOGS" and self.settings.exports)):
            self.forwarder.submit(_SIGNALS[kind], body, count_entries(frame, kind))

    def _count_cut(self, frame: Any, kind: str, passed: int) -> None:
        """Count the entries of ``frame`` past the ``passed`` ones the conversion reached (kept, or counted apart)."""
        # Only max_frame_entries of a frame are converted: 8 MiB of "{}" records are 2 million entries, which took
        # ~9 s on the event loop and over a gigabyte before the store kept its last 1000.
        if passed < self.settings.max_frame_entries:
            return
        cut = count_entries(frame, kind) - passed
        if cut <= 0:
            return
        self.dropped_entries += cut
        self._warn_cut("a %s telemetry frame held more than max_frame_entries (%d): %d entries dropped (%d so far)",
                       kind, self.settings.max_frame_entries, cut, self.dropped_entries)

    def _warn_cut(self, message: str, *args: object) -> None:
        """A warning about what a frame lost to the module's bounds, at most one per ``DROP_LOG_INTERVAL_S`` (the
        counters say the rest)."""
        now = time.monotonic()
        if now - self._cut_logged_at >= DROP_LOG_INTERVAL_S:
            self._cut_logged_at = now
            log.warning(message, *args)

    def _add_log(self, entry: dict[str, Any], size: int | None = None, trace_id: str | None = None, *,
                 caller: str | None = None) -> None:
        """Store ``entry`` and fire the ``log`` triggers its level matches, unless it was written while handling a
        log trigger's call: in that call's trace (``entry``'s ``trace_id``, or ``trace_id``: the trace of the
        ``engine::log::*`` call that wrote it), or, carrying no trace at all, :meth:`_feedback_untraced`. Such an
        entry is stored like any other and counted in :attr:`log_trigger_feedback` once per trigger it matched.
        ``caller``: the worker whose ``engine::log::*`` call wrote it (``None``: a ``LOGS`` frame, or in-process)."""
        if size is None:
            size = self.logs.sizes([entry])[0]
        self.logs.add(entry, size)
        if not self._log_triggers:
            return
        # By severity number (the text when there is none): comparing the text alone, a `level: error` trigger
        # missed a record of number 17 without text, and `warn` missed stdlib logging's WARNING.
        severity = severity_of(entry["severity_number"], entry["severity_text"]) or 0
        targets = [self._trigger_targets[trigger_id] for trigger_id, level in self._log_triggers.items()
                   if level is None or level[0] <= severity <= level[1]]
        if not targets:
            return
        # Before, a handler that logged fired its own trigger again with each record, for ever (1,850 calls a
        # second; with three such triggers other workers' calls waited ~1 s). Any log trigger, not only the one
        # whose call wrote it: two handlers that log would fire each other in turn.
        if self._in_log_trigger_trace(entry["trace_id"]) or self._in_log_trigger_trace(trace_id):
            self.log_trigger_feedback += len(targets)
            return
        if untraced(entry["trace_id"]) and untraced(trace_id) and self._feedback_untraced(caller):
            self.log_trigger_feedback += len(targets)
            self.log_trigger_feedback_untraced += len(targets)
            return
        # Each call keeps the entry alive until its handler answers, however long after the store let it go: the
        # fan-out holds the entry's bytes under max_fired_bytes (before, none: a handler that never answered kept
        # 1 GB of 1 MB entries alive in 25 s, the store holding 67 MB).
        slots = self.services.fired_calls.try_take(len(targets), size)
        if slots is None:
            self.services.fired_calls.skip(f"log trigger calls of a {entry['severity_text'].lower() or 'log'} entry",
                                           len(targets))
            return
        payload = {key: entry.get(key) for key in _LOG_KEYS}
        token = _FIRING_LOG_TRIGGER.set(True)
        try:
            for target in targets:
                self.services.fire(target, payload, taken=slots.one())
        finally:
            _FIRING_LOG_TRIGGER.reset(token)

    def _feedback_untraced(self, caller: str | None) -> bool:
        """Whether a record without trace context is taken for a log trigger handler's: the reference SDK's sync
        handlers lose the call's trace (it runs them in an executor without their context), and looped for ever.

        Only an ``engine::log::*`` call of a worker (``caller``) is: that worker had a log trigger's call in flight,
        or answered one within :data:`~.feedback.GRACE_S`. A ``LOGS`` frame's record is ordinary: which worker wrote
        it is not known (the reference SDK sends telemetry on a connection of its own), and a rule for every
        worker's untraced records (tried: those stamped while any log trigger's call was in flight) kept a busy log
        trigger, such as one that ships records elsewhere, from firing for nearly any of them."""
        return self._log_trigger_calls.worker_busy(caller, _now_ns())

    def _mark(self, head: str) -> str:
        return hashlib.blake2b(head.encode(), digest_size=8, key=self._trace_mark_key).hexdigest()

    def _marked_trace_id(self) -> str:
        """A new trace id for a log trigger's call: 16 random hex digits, then their keyed hash (so no table of
        such traces is kept, and a worker cannot forge one: 2**-64 for a random id to look marked)."""
        head = f"{random.getrandbits(64):016x}"
        return head + self._mark(head)

    def _in_log_trigger_trace(self, trace_id: Any) -> bool:
        """Whether ``trace_id`` is one :meth:`_marked_trace_id` gave (the trace of a log trigger's call)."""
        return (isinstance(trace_id, str) and len(trace_id) == 32
                and trace_id[16:] == self._mark(trace_id[:16]))

    # -- engine call spans and counters (InvocationObserver) -------------------------------------------------

    def call_started(self, function_id: str, traceparent: str | None, *, builtin: bool,
                     worker_id: str | None = None) -> _Call:
        """A function execution begins; the returned token goes back to :meth:`call_finished`."""
        parent = parse_traceparent(traceparent)
        # a log trigger's call: what its handler logs fires no log trigger
        firing = _FIRING_LOG_TRIGGER.get()
        if parent:
            trace_id = parent[0]
        elif firing:
            trace_id = self._marked_trace_id()
        else:
            trace_id = f"{random.getrandbits(128):032x}"
        kind = "internal" if function_id.startswith("engine::") else "user"
        attributes = [["faas.invoked_name", function_id], ["faas.trigger", "other"], ["function_id", function_id],
                      ["iii.function.kind", kind]]
        if worker_id is not None:
            attributes.append(["worker_id", worker_id])
        if not builtin:
            self.counters.count(function_id, "deferred")
        call = _Call(function_id, trace_id, f"{random.getrandbits(64):016x}", parent[1] if parent else None,
                     _now_ns(), attributes)
        if firing and not builtin and worker_id is not None:  # routed: worker_id is the callee's
            self._log_trigger_calls.started(worker_id)
            call.log_trigger_worker = worker_id
        return call

    def child_traceparent(self, call: _Call) -> str | None:
        """The W3C ``traceparent`` naming this call's span as the parent."""
        return f"00-{call.trace_id}-{call.span_id}-01"

    def call_finished(self, call: _Call, error: Any, *, builtin: bool) -> None:
        """The execution of ``call`` ended (``error`` is the error body, or ``None``)."""
        if builtin:
            self.counters.count(call.function_id, "error" if error is not None else "success")
        if call.log_trigger_worker is not None:
            self._log_trigger_calls.finished(call.log_trigger_worker, _now_ns())
        if self.spans is None and self.forwarder is None:
            return
        span: dict[str, Any] = {
            "trace_id": call.trace_id, "span_id": call.span_id, "parent_span_id": call.parent_span_id,
            "name": f"call {call.function_id}", "start_time_unix_nano": call.start_ns,
            "end_time_unix_nano": _now_ns(), "status": "error" if error is not None else "ok",
            "attributes": call.attributes, "service_name": self.settings.service_name, "events": [], "links": [],
            "instrumentation_scope_name": "iii", "instrumentation_scope_version": ENGINE_VERSION,
        }
        if isinstance(error, dict) and error.get("message"):
            span["status_description"] = str(error["message"])
        if self.spans is not None:
            self.spans.add(span)
        if self._span_batch is not None and self.settings.exports:
            self._span_batch.add(self._span_body(span))

    def _span_body(self, span: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "traceId": span["trace_id"], "spanId": span["span_id"], "name": span["name"], "kind": 2,
            "startTimeUnixNano": str(span["start_time_unix_nano"]), "endTimeUnixNano": str(span["end_time_unix_nano"]),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in span["attributes"]],
            "status": {"code": 2 if span["status"] == "error" else 1},
        }
        if span["parent_span_id"]:
            body["parentSpanId"] = span["parent_span_id"]
        return body

    def _span_request(self, bodies: list[Any]) -> dict[str, Any]:
        """An ExportTraceServiceRequest of the engine's span ``bodies``."""
        return {"resourceSpans": [{"resource": {"attributes": self._resource_attributes()},
                                   "scopeSpans": [{"scope": {"name": "iii", "version": ENGINE_VERSION},
                                                   "spans": bodies}]}]}

    def _resource_attributes(self) -> list[dict[str, Any]]:
        return [{"key": k, "value": {"stringValue": v}} for k, v in self._resource().items()]

    def _resource(self) -> dict[str, str]:
        s = self.settings
        out = {"service.name": s.service_name, "service.version": s.service_version}
        if s.service_namespace:
            out["service.namespace"] = s.service_namespace
        environment = os.environ.get("DEPLOYMENT_ENVIRONMENT")
        if environment:
            out["deployment.environment"] = environment
        return out

    # -- log trigger type ------------------------------------------------------------------------------------

    async def register(self, trigger: TriggerInfo) -> None:
        """A ``log`` trigger: ``config.level`` (absent, null or ``all`` = every entry) selects the entries of one
        level, by severity number: ``trace`` 1-4, ``debug`` 5-8, ``info`` 9-12, ``warn`` 13-16, ``error`` 17-20,
        ``fatal`` 21-24; an entry without a number by the level its text names (:func:`~.queries.severity_of`).
        Level names are taken in any case, ``warning`` and ``critical`` as ``warn`` and ``fatal``.

        Raises:
            EngineError: ``invalid_trigger_config`` for any other level (before, ``level: 13`` or a misspelt name
                was taken and fired for nothing).
        """
        level = trigger.config.get("level") if isinstance(trigger.config, dict) else None
        selected = None
        if level is not None and not (isinstance(level, str) and level.lower() == "all"):
            try:
                selected = severity_range(level, "level")
            except ValueError as exc:
                raise EngineError("invalid_trigger_config", f"log trigger {trigger.id}: {exc}; or all") from None
        self._log_triggers[trigger.id] = selected
        self._trigger_targets[trigger.id] = trigger.function_id

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Remove a ``log`` trigger."""
        self._log_triggers.pop(trigger.id, None)
        self._trigger_targets.pop(trigger.id, None)

    # -- functions -------------------------------------------------------------------------------------------

    def _make_log(self, level: str) -> Any:
        number, text = _SEVERITIES[level]
        function_id = f"engine::log::{level}"

        async def handler(data: Any, ctx: InvocationContext) -> None:
            data = _object(data, function_id)
            message = data.get("message")
            if not isinstance(message, str):
                raise EngineError("deserialization_error",
                                  f"Failed to deserialize input for {function_id}: missing string field `message`")
            # Checked as a LOGS frame's record's are (32 / 16 hex digits; empty or zeros = none): before, any text
            # was stored and exported, and a collector may refuse the whole export batch for one bad id.
            try:
                trace_id = optional_id(data.get("trace_id"), "trace_id", 32, f"an {function_id} call")
                span_id = optional_id(data.get("span_id"), "span_id", 16, f"an {function_id} call")
            except TelemetryFormatError as exc:
                raise EngineError("deserialization_error",
                                  f"Failed to deserialize input for {function_id}: {exc}") from None
            if self.settings.logs_sampling_ratio < 1.0 and random.random() >= self.settings.logs_sampling_ratio:
                return None
            now = _now_ns()
            extra = data.get("data")
            service = data.get("service_name")
            entry = {
                "timestamp_unix_nano": now, "observed_timestamp_unix_nano": now, "severity_number": number,
                "severity_text": text, "body": message,
                "attributes": dict(extra) if isinstance(extra, dict) else {},
                "trace_id": trace_id, "span_id": span_id,
                "resource": self._resource(), "service_name": service if isinstance(service, str) else "unknown",
                "instrumentation_scope_name": "iii", "instrumentation_scope_version": ENGINE_VERSION,
            }
            if self.settings.logs_console_output:  # before, echoed even when off: 136,732 lines in 10 s
                self._echo(number, message[:ECHO_BODY_CHARS], "engine::log::* messages")
            caller = parse_traceparent(ctx.traceparent)
            self._add_log(entry, trace_id=caller[0] if caller else None, caller=ctx.caller_worker_id)
            if self._log_batch is not None and self.settings.exports_logs:
                self._log_batch.add(self._log_record(entry))
            return None

        return handler

    def _log_record(self, entry: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "timeUnixNano": str(entry["timestamp_unix_nano"]),
            "observedTimeUnixNano": str(entry["observed_timestamp_unix_nano"]),
            "severityNumber": entry["severity_number"], "severityText": entry["severity_text"],
            "body": {"stringValue": entry["body"]},
            "attributes": [{"key": k, "value": {"stringValue": v if isinstance(v, str) else dumps(v)}}
                           for k, v in entry["attributes"].items()],
        }
        if entry["trace_id"]:
            record["traceId"] = entry["trace_id"]
        if entry["span_id"]:
            record["spanId"] = entry["span_id"]
        return record

    def _log_request(self, records: list[Any]) -> dict[str, Any]:
        """An ExportLogsServiceRequest of the engine's log ``records``."""
        return {"resourceLogs": [{"resource": {"attributes": self._resource_attributes()},
                                  "scopeLogs": [{"scope": {"name": "iii", "version": ENGINE_VERSION},
                                                 "logRecords": records}]}]}

    def _budget(self, ctx: InvocationContext, *fixed: str) -> int:
        """Bytes the entries of an answer may take: ``max_message_size`` less the frame around the answer and the
        answer's other fields (``fixed``, encoded)."""
        return self.max_answer_bytes - _FRAME_BYTES - len(ctx.invocation_id or "") - sum(map(frame_bytes, fixed))

    async def _logs_list(self, data: Any, ctx: InvocationContext) -> EncodedResult:
        query = logs_query(_object(data, "engine::logs::list"))
        page = await page_of(self.logs.snapshot(), query.keep, query)
        echo = dumps(query.echo)
        encoded = await encode_entries(page.entries, self._budget(ctx, echo))
        return answer_json({"logs": EncodedResult(encoded.json), "total": page.total, "query": EncodedResult(echo),
                            **page.fields(encoded), "timestamp": _now_ms()})

    async def _logs_clear(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        _no_fields(data, "engine::logs::clear")
        self.logs.clear()
        return {"success": True}

    def _span_store(self) -> SpanStore:
        if self.spans is None:
            raise _NOT_ENABLED
        return self.spans

    async def _traces_list(self, data: Any, ctx: InvocationContext) -> EncodedResult:
        snapshot = self._span_store().snapshot()
        data = _object(data, "engine::traces::list")
        adopted = await run_sliced(adopted_roots(snapshot.entries, TREE_SLICE_S))
        query = traces_query(snapshot.entries, data, adopted)
        page = await page_of(snapshot, query.keep, query)
        encoded = await encode_entries(page.entries, self._budget(ctx))
        # offset: where this page starts now (after a cursor as well)
        return answer_json({"spans": EncodedResult(encoded.json), "total": page.total, "offset": page.start,
                            "limit": query.limit, **page.fields(encoded)})

    async def _traces_tree(self, data: Any, ctx: InvocationContext) -> EncodedResult:
        trace_id = _object(data, "engine::traces::tree").get("trace_id")
        if not isinstance(trace_id, str):
            raise EngineError("deserialization_error",
                              "Failed to deserialize input for engine::traces::tree: missing string field `trace_id`")
        spans = await select(self._span_store().entries(), lambda span: span["trace_id"] == trace_id)
        tree = await trace_tree_async(spans)
        encoded = await encode_tree(tree["roots"], self._budget(ctx))
        # truncated: spans left out for max_message_size or for being deeper than TREE_MAX_DEPTH
        return answer_json({"roots": EncodedResult(encoded.json), "truncated": encoded.truncated or tree["depth_cut"]})

    async def _traces_clear(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        _no_fields(data, "engine::traces::clear")
        self._span_store().clear()
        return {"success": True}

    def _performance(self) -> dict[str, float]:
        spans = self.spans.entries() if self.spans is not None else []
        durations = sorted((s["end_time_unix_nano"] - s["start_time_unix_nano"]) / 1e6 for s in spans)
        return {
            "avg_duration_ms": sum(durations) / len(durations) if durations else 0.0,
            "p50_duration_ms": percentile(durations, 50), "p95_duration_ms": percentile(durations, 95),
            "p99_duration_ms": percentile(durations, 99),
            "min_duration_ms": durations[0] if durations else 0.0,
            "max_duration_ms": durations[-1] if durations else 0.0,
        }

    async def _metrics_list(self, data: Any, ctx: InvocationContext) -> EncodedResult:
        data = _object(data, "engine::metrics::list")
        check_keys(data, METRICS_KEYS, "engine::metrics::list")
        start, end = data.get("start_time"), data.get("end_time")
        name, interval = data.get("metric_name"), data.get("aggregate_interval")
        _check_query("engine::metrics::list", start, end, name)
        if interval is not None and (not isinstance(interval, int | float) or isinstance(interval, bool)
                                     or interval < 0):
            raise EngineError("deserialization_error",
                              "Failed to deserialize input for engine::metrics::list: aggregate_interval must be a "
                              "number >= 0")
        where = Paging.parse(data, "engine::metrics::list", METRICS_ORDER)
        snapshot = self.metrics.snapshot()
        # Each bound alone filters too: before, only both did, and start_time an hour ahead alone listed everything.
        low = None if start is None else start * 1_000_000
        high = None if end is None else end * 1_000_000

        def in_window(e: dict[str, Any]) -> bool:
            at = e["timestamp_unix_nano"]
            return (low is None or at >= low) and (high is None or at <= high)

        def keep(e: dict[str, Any]) -> bool:
            return in_window(e) and (name is None or e["name"] == name)

        page = await page_of(snapshot, keep, where)
        fixed: dict[str, Any] = {"engine_metrics": EncodedResult(dumps({
            "invocations": self.counters.as_dict(), "workers": self.workers.as_dict(),
            "performance": self._performance(), **{name: bound["details"] for name, bound in self._bounds().items()}}))}
        if start is not None or end is not None or interval is not None:
            fixed["query"] = EncodedResult(dumps({"start_time": start, "end_time": end,
                                                  "aggregate_interval": interval, "metric_name": name}))
        budget = self._budget(ctx, *(value.json for value in fixed.values()))
        # The aggregates first: they cannot be paged, the entries can (next_offset).
        # Over the metrics in the window, or over all stored when no bound is given (before, an interval without
        # both bounds answered no aggregates at all, without a word).
        aggregated = aggregate(await select(snapshot.entries, in_window), interval) if interval else []
        buckets = await encode_entries(aggregated, budget)
        encoded = await encode_entries(page.entries, budget - buckets.size)
        out: dict[str, Any] = {"engine_metrics": fixed["engine_metrics"], "sdk_metrics": EncodedResult(encoded.json)}
        if aggregated:
            out["aggregated_metrics"] = EncodedResult(buckets.json)
        if "query" in fixed:
            out["query"] = fixed["query"]
        paged = page.fields(encoded)
        paged["truncated"] = encoded.truncated or buckets.truncated
        paged["oversized"] = encoded.oversized + buckets.oversized
        out.update(total=page.total, **paged, timestamp=_now_ms())
        return answer_json(out)

    async def _rollups_list(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        data = _object(data, "engine::rollups::list")
        level = data.get("level", 0)
        # Checked rather than echoed: before, any JSON given as level (or times) came back in the answer.
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 255:
            raise EngineError("deserialization_error",
                              "Failed to deserialize input for engine::rollups::list: level must be an integer 0..255")
        _check_query("engine::rollups::list", data.get("start_time"), data.get("end_time"), data.get("metric_name"))
        return {"rollups": [], "histogram_rollups": [], "level": level,
                "query": {"start_time": data.get("start_time"), "end_time": data.get("end_time"),
                          "metric_name": data.get("metric_name")}, "timestamp": _now_ms()}

    async def _health(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        s = self.settings
        otel: dict[str, Any] = {"status": "disabled", "details": None}
        if s.enabled:
            otel = {"status": "healthy", "details": {
                "enabled": True, "service_name": s.service_name if s.service_name_set else None,
                "exporter": f"Some({s.exporter.capitalize()})" if s.exporter_set else "None"}}
        spans: dict[str, Any] = {"status": "disabled", "details": None}
        if self.spans is not None:
            spans = {"status": "healthy", "details": {"stored_spans": len(self.spans), "stored_bytes": self.spans.bytes,
                                                      "evicted": self.spans.evicted}}
        telemetry = {"ingested_frames": self.ingested_frames, "dropped_frames": self.dropped_frames,
                     "queued_frames": self._queue.qsize(), "queued_bytes": self._queued_bytes,
                     "malformed_frames": self.malformed_frames, "dropped_entries": self.dropped_entries,
                     "dropped_items": self.dropped_items, "log_trigger_feedback": self.log_trigger_feedback,
                     "log_trigger_feedback_untraced": self.log_trigger_feedback_untraced}
        if self.alerts is not None:
            telemetry.update(webhook_sent=self.webhook_sent, webhook_failed=self.webhook_failed,
                             webhook_skipped=self.webhook_skipped, alert_actions_throttled=self.alert_actions_throttled)
        if self.forwarder is not None:
            telemetry.update(exported=self.forwarder.sent, export_dropped=self.forwarder.dropped,
                             export_failed=self.forwarder.failed, exported_records=self.forwarder.sent_records,
                             export_dropped_records=self.forwarder.dropped_records,
                             export_failed_records=self.forwarder.failed_records)
        modules = await self._modules_health()
        deliveries = self._deliveries()
        return {
            # A bound shedding calls is the engine protecting itself, not failing: the components say so, and the
            # status stays healthy (a probe must not restart an engine for refusing one worker's flood). A store,
            # server or remote engine a module depends on that does not answer makes it degraded: the calls that
            # need it fail (before, healthy while every state::set failed on a Redis that was down); so does an
            # alert webhook that fails delivery after delivery: the alerts are lost.
            "status": "degraded" if any(c["status"] == UNHEALTHY for c in modules.values())
            or deliveries.get("alert_deliveries", {}).get("status") == "degraded" else "healthy",
            "components": {
                "otel": otel,
                "metrics": {"status": "healthy", "details": {"stored_metrics": len(self.metrics),
                                                             "stored_bytes": self.metrics.bytes,
                                                             "evicted": self.metrics.evicted,
                                                             "refused_names": self.metrics.refused_names,
                                                             "evicted_for_names": self.metrics.evicted_for_names}},
                "logs": {"status": "healthy", "details": {"stored_logs": len(self.logs),
                                                          "stored_bytes": self.logs.bytes,
                                                          "evicted": self.logs.evicted}},
                "spans": spans,
                "telemetry": {"status": "healthy", "details": telemetry},
                **self._bounds(),
                **deliveries,
                **modules,
            },
            "timestamp": _now_ms(),
            "version": ENGINE_VERSION,
        }

    async def _modules_health(self) -> dict[str, Component]:
        """The other modules' components (:func:`~iii_engine.modules.health.modules_health`). Health checks at the
        same time share one probe: a flood of them is one PING to each store at a time, not one each."""
        probing = self._probing
        if probing is None or probing.done():
            others = [module for module in self.services.loaded_modules() if module is not self]
            probing = self._probing = asyncio.get_running_loop().create_task(modules_health(others),
                                                                             name="health-probe")
            self._background.add(probing)
            probing.add_done_callback(self._background.discard)
        return dict(await asyncio.shield(probing))

    def _deliveries(self) -> dict[str, Component]:
        """The ``alert_deliveries`` component (none without alert rules): ``degraded`` while a rule's last
        :data:`ALERT_DELIVERIES_DEGRADED_AFTER` webhook deliveries all failed, the latest within
        :data:`ALERT_DELIVERIES_DEGRADED_FOR_S`; ``failing_rules`` names those rules, ``failed_in_a_row`` is the
        longest such run of any rule."""
        if self.alerts is None:
            return {}
        in_row = self._failed_in_row()
        failing = sorted(rule for rule, failed in in_row.items() if failed >= ALERT_DELIVERIES_DEGRADED_AFTER)
        return {"alert_deliveries": {"status": "degraded" if failing else "healthy", "details": {
            "webhook_sent": self.webhook_sent, "webhook_failed": self.webhook_failed,
            "failed_in_a_row": max(in_row.values(), default=0), "failing_rules": failing,
            "last_failure": self._webhook_problem, "webhook_skipped": self.webhook_skipped,
            "actions_throttled": self.alert_actions_throttled}}}

    def _failed_in_row(self) -> dict[str, int]:
        """Each rule's webhook deliveries failed in a row, of those whose latest failure is recent enough to count."""
        now = time.monotonic()
        return {rule: failed for rule, (failed, at) in self._delivery_failures.items()
                if now - at < ALERT_DELIVERIES_DEGRADED_FOR_S}

    def _bounds(self) -> dict[str, dict[str, Any]]:
        """The engine's call bounds as health components (their details are also in ``engine::metrics::list``);
        ``degraded`` while a bound lost calls within the last ``iii_engine.limits.DEGRADED_WINDOW_S``.

        ``fired_calls`` (max_fired_calls): skipped = producers with nobody to wait found no room, refused = a waiting
        producer's call failed with fire_limit. ``worker_calls`` (max_calls_per_worker): refused = answered with
        too_many_calls, refused_void = void calls dropped.
        """
        services = self.services
        fired = services.fired_calls
        return {
            "fired_calls": {"status": "degraded" if fired.degraded() else "healthy", "details": fired.stats()},
            "worker_calls": {"status": "degraded" if services.worker_calls_degraded() else "healthy",
                             "details": services.worker_calls_stats()},
        }

    def _counter_values(self) -> dict[str, float]:
        c = self.counters
        return {"iii.invocations.total": c.total, "iii.invocations.success": c.success,
                "iii.invocations.error": c.error, "iii.invocations.deferred": c.deferred,
                **{f"iii.workers.{name}": value for name, value in self.workers.as_dict().items()}}

    def evaluate_alerts(self) -> list[dict[str, Any]]:
        """One evaluation pass; runs the actions of the alerts that triggered."""
        if self.alerts is None:
            return []
        events = self.alerts.evaluate(self._counter_values(), self.metrics.entries(), _now_ms())
        for event in events:
            action = self.alerts.rule(event["name"]).action
            fields = {"alert": event["name"], "metric": event["metric"], "value": event["value"],
                      "threshold": event["threshold"], "operator": event["operator"], "timestamp": event["timestamp"]}
            if action.get("type") == "function":
                if self._action_due(event["name"], f"function {action['path']}"):
                    self.services.fire(str(action["path"]), {**fields, "firing": True})
            elif action.get("type") == "webhook":
                self._deliver(event["name"], str(action["url"]), fields)
            self._alert_log.note("triggered", f"Alert triggered: {fields}")
        return events

    def _action_due(self, rule: str, what: str) -> bool:
        """Whether ``rule``'s action may run now (:data:`ALERT_ACTION_MIN_INTERVAL_S`); if so, its run is noted."""
        now = time.monotonic()
        last = self._action_at.get(rule)
        if last is not None and now - last < ALERT_ACTION_MIN_INTERVAL_S:
            self.alert_actions_throttled += 1
            self._alert_log.note("actions throttled", f"alert {rule}: {what} not run: its previous run was less "
                                 f"than {ALERT_ACTION_MIN_INTERVAL_S:g} s ago")
            return False
        self._action_at[rule] = now
        return True

    def _log_alert_counts(self, counts: Mapping[str, int], latest: str | None) -> None:
        what = counts_text(counts)
        latest_text = latest_tail(latest)
        log.warning("alerts: %s not logged one by one (past %d lines per %g s)%s", what, ALERT_LOG_BURST,
                    SKIP_LOG_INTERVAL_S, latest_text)

    def _deliver(self, rule: str, url: str, body: dict[str, Any]) -> None:
        # A webhook that hangs while alerts keep triggering (cooldown 0, or engine::alerts::evaluate called in a
        # loop) used to start one more delivery each time, without limit; now the event is skipped and counted.
        shown = shown_url(url)  # a path may hold the webhook's secret (Slack's /services/T…/B…/SECRET)
        running = self._webhooks.get(rule)
        if running is not None and not running.done():
            self.webhook_skipped += 1
            self._alert_log.note("webhook deliveries skipped (busy)", f"alert {rule}: webhook {shown} still busy "
                                 "with an earlier delivery; this one is skipped")
            return
        if self._closed:
            # the stop already cut the deliveries under way: one started now would be cut (or outlive the module)
            self.webhook_failed += 1
            self._alert_log.note("webhook deliveries not started (engine stopping)",
                                 f"alert {rule}: webhook {shown} not delivered: the engine is stopping")
            return
        if not self._action_due(rule, f"webhook {shown}"):
            return
        task = asyncio.get_running_loop().create_task(self._webhook(rule, url, body), name=f"alert-webhook-{rule}")
        self._webhooks[rule] = task
        self._webhook_runs.add(task)
        task.add_done_callback(self._webhook_runs.discard)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _webhook(self, rule: str, url: str, body: dict[str, Any]) -> None:
        import aiohttp

        problem = "no attempt finished"
        # Scheme, host and port only: the user info, path and query often carry the webhook's credentials.
        shown = f"alert {rule!r}: webhook {shown_url(url)}"
        try:
            async with asyncio.timeout(self.webhook_budget_s), aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.webhook_budget_s)) as session:
                for attempt, pause in enumerate((1, 2, 4, 0)):
                    try:
                        # Not followed: aiohttp follows a 301/302/303 with a GET without the body, and such a
                        # delivery was counted as sent (216 alerts arrived as 216 empty GETs).
                        async with session.post(url, json=body, allow_redirects=False) as response:
                            if response.status < 300:
                                self.webhook_sent += 1
                                self._delivery_failures.pop(rule, None)
                                return
                            problem = http_failure(response.status, response.headers.get("Location"))
                    except aiohttp.ClientError as exc:
                        problem = f"{type(exc).__name__}: {scrubbed(str(exc), url)}"
                    except TimeoutError:
                        raise  # the budget's end (it may come as aiohttp's timeout): handled below
                    except Exception as exc:
                        # Not only aiohttp.ClientError: a UnicodeError (a host IDNA cannot encode) ended the
                        # delivery with "Task exception was never retrieved", counted nowhere.
                        problem = f"{type(exc).__name__}: {scrubbed(str(exc), url)}"
                    log.warning("%s failed (attempt %d): %s", shown, attempt + 1, problem)
                    if pause:
                        await asyncio.sleep(pause)
        except TimeoutError:
            problem = f"no success within {self.webhook_budget_s:g} s ({problem})"
        except Exception as exc:  # the session itself: still a failed delivery, counted
            problem = f"{type(exc).__name__}: {scrubbed(str(exc), url)}"
        self.webhook_failed += 1
        now = time.monotonic()
        failed, at = self._delivery_failures.get(rule, (0, now))
        if now - at >= ALERT_DELIVERIES_DEGRADED_FOR_S:
            failed = 0  # an old run of failures: this one starts a new count
        self._delivery_failures[rule] = (failed + 1, now)
        self._webhook_problem = f"{shown}: {problem}"
        log.error("%s not delivered: %s", shown, problem)

    async def _alerts_list(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        if self.alerts is None:
            return {"alerts": [], "firing_count": 0, "message": "Alert manager not initialized",
                    "timestamp": _now_ms()}
        states = list(self.alerts.states.values())
        return {"alerts": states, "firing_count": sum(1 for s in states if s["firing"]), "timestamp": _now_ms()}

    async def _alerts_evaluate(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        if self.alerts is None:
            return {"evaluated": False, "message": "Alert manager not initialized", "timestamp": _now_ms()}
        return {"evaluated": True, "triggered_alerts": self.evaluate_alerts(), "timestamp": _now_ms()}

    async def _sampling_rules(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        sampling = self.settings.sampling
        rules = [{"operation": r.operation, "service": r.service, "rate": r.rate} for r in sampling.rules]
        default = sampling.default
        parent_based = True if sampling.parent_based is None else sampling.parent_based
        return {"traces": {"default_ratio": default if default is not None else self.settings.sampling_ratio,
                           "rules": rules, "parent_based": parent_based},
                "logs": {"sampling_ratio": self.settings.logs_sampling_ratio}, "timestamp": _now_ms()}

    async def _baggage_get(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        key = _object(data, "engine::baggage::get").get("key")
        if not isinstance(key, str):
            raise EngineError("deserialization_error",
                              "Failed to deserialize input for engine::baggage::get: missing string field `key`")
        return {"value": parse_baggage(ctx.baggage).get(key)}

    async def _baggage_get_all(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        return {"baggage": parse_baggage(ctx.baggage)}

    async def _baggage_set(self, data: Any, ctx: InvocationContext) -> dict[str, Any]:
        data = _object(data, "engine::baggage::set")
        if not isinstance(data.get("key"), str) or not isinstance(data.get("value"), str):
            raise EngineError("deserialization_error",
                              "Failed to deserialize input for engine::baggage::set: `key` and `value` must be strings")
        return {"success": True,
                "note": "Baggage set in new context. For propagation, use SDK-level baggage headers."}

    # -- background ------------------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.metrics.prune(_now_ns())

    async def _alert_loop(self) -> None:
        while True:
            try:
                self.evaluate_alerts()
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(10)
