"""The one module that reads OpenTelemetry's private internals (underscore names of opentelemetry-api/-sdk).

Why: the team rule is that a library's private internals are relied on in one module only, which checks each one
before use and falls back. Every function here checks the shape it needs (at import, or on the object at first use)
and, when the installed OpenTelemetry differs, returns ``None``/``False`` (or raises :class:`InternalsMissing` where
the caller already has a public-API way round) after one warning naming the missing internal. The callers in
:mod:`iii.telemetry` and :mod:`iii.light_span` then take the OpenTelemetry public API. What that costs depends on the
internal, and its warning says which (:data:`SLOWER`, :data:`NOT_REUSED`): the per-span paths get slower with the
same telemetry; without the internals of pipeline reuse each client builds its own providers, and the process grows
by ~6 KB per client again.

Example:
    >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> exporter = InMemorySpanExporter()
    >>> processor = BatchSpanProcessor(exporter)
    >>> batch_exporter(batch_of(processor)) is exporter
    True
    >>> processor.shutdown()
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from types import ModuleType
from typing import Any, Final

from opentelemetry import context as _context_module
from opentelemetry.attributes import BoundedAttributes as _BoundedAttributes

from .warn_once import WarnOnce

__all__ = [
    "InternalsMissing", "agnostic_contextmanager", "attributes_items", "batch_exporter", "batch_full", "batch_of",
    "batch_waiting", "composite_parts", "context_variable",
    "drop_added_processors", "freeze_attributes", "log_processors", "metric_readers", "pause_workers", "resume_workers",
    "retarget_providers", "runtime_context", "set_batch_exporter", "text_emitter",
]

log = logging.getLogger(__name__)

_warn_once = WarnOnce(log)


class InternalsMissing(AttributeError):
    """An OpenTelemetry internal this module relies on is not there (another layout): take the public path."""


#: What a missing internal of a per-span path costs (its caller takes the public API instead).
SLOWER: Final = "using the public API path, slower but the same telemetry"
#: What a missing internal of pipeline reuse costs: every pipeline built registers at-fork callbacks for good.
NOT_REUSED: Final = ("telemetry pipelines are not reused: each client builds its own providers, processors and"
                     " reader, and the process grows by ~6 KB per client (OpenTelemetry never removes their at-fork"
                     " callbacks)")
# The batch processor's internals serve both: the span texts' inline emit and pipeline reuse.
_BATCH_COST: Final = f"{SLOWER}; and {NOT_REUSED}"


def missing(name: str, cost: str) -> None:
    """Say once per process that the internal ``name`` is missing, and what its fallback costs (``cost``:
    :data:`SLOWER`, :data:`NOT_REUSED` or the fallback's own words).

    Example:
        >>> missing("demo._thing", SLOWER); missing("demo._thing", SLOWER)  # one warning, not two
    """
    _warn_once(name, "OpenTelemetry internal %s not found (another opentelemetry-sdk layout): %s", name, cost)


def _all_have(objects: Iterable[Any], name: str, what: str, cost: str) -> bool:
    return all(_has(obj, (name,), what, cost) for obj in objects)


def _has(obj: Any, names: Iterable[str], what: str, cost: str) -> bool:
    return _fields_hold(obj, ((name, object) for name in names), what, cost)


def _fields_hold(obj: Any, fields: Iterable[tuple[str, Any]], what: str, cost: str) -> bool:
    """Whether ``obj`` has every field of ``fields`` (``(name, type)`` pairs; a type is anything ``isinstance``
    takes: a class, a union such as ``threading.Thread | None``, ``Callable``); else one warning naming the first
    field that is absent or of another type as ``what.name``, saying what that costs (``cost``, see :func:`missing`).

    Example:
        >>> from types import SimpleNamespace
        >>> batch = SimpleNamespace(_queue=collections.deque(), _worker_thread=None)
        >>> fields = [("_queue", collections.deque), ("_worker_thread", threading.Thread | None)]
        >>> _fields_hold(batch, fields, "Demo", SLOWER)
        True
        >>> _fields_hold(batch, [("_queue", list)], "Demo", SLOWER)  # one warning: Demo._queue
        False
    """
    for name, kind in fields:
        if not hasattr(obj, name) or not isinstance(getattr(obj, name), kind):
            missing(f"{what}.{name}", cost)
            return False
    return True


# --- the SDK's BatchProcessor (behind BatchSpanProcessor and BatchLogRecordProcessor) -----------------------------

# Its fields the inline emit of text_emitter reads and writes, with the type each must have.
_BATCH_FIELDS: Final = (("_exporter", object), ("_queue", collections.deque), ("_shutdown", bool), ("_pid", int),
                        ("_max_queue_size", int), ("_max_export_batch_size", int), ("_worker_awaken", threading.Event))


def batch_of(processor: Any) -> Any | None:
    """The SDK's ``BatchProcessor`` inside ``processor`` (a ``BatchSpanProcessor``/``BatchLogRecordProcessor``) when
    it has the fields this module uses, else ``None`` (one warning).

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> processor = BatchSpanProcessor(ConsoleSpanExporter())
        >>> batch_of(processor) is not None, batch_of(object()) is None  # (the second warns once)
        (True, True)
        >>> processor.shutdown()
    """
    batch = getattr(processor, "_batch_processor", None)
    if batch is None:
        missing(f"{type(processor).__name__}._batch_processor", _BATCH_COST)
        return None
    return batch if _fields_hold(batch, _BATCH_FIELDS, "BatchProcessor", _BATCH_COST) else None


def batch_full(batch: Any) -> int:
    """The size of a :func:`batch_of` batch's queue when it is full, so that the next item emitted pushes its oldest
    out (the SDK logs that, but counts it nowhere a caller can read); 0 while it is not (or the batch is shut down).

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> processor = BatchSpanProcessor(ConsoleSpanExporter(), max_queue_size=1, max_export_batch_size=1)
        >>> batch = batch_of(processor)
        >>> before = batch_full(batch); batch._queue.append("item"); before, batch_full(batch)
        (0, 1)
        >>> batch._queue.clear(); processor.shutdown()
    """
    size: int = batch._max_queue_size
    return size if not batch._shutdown and len(batch._queue) >= size else 0


def batch_waiting(batch: Any) -> int:
    """How many items a :func:`batch_of` batch's queue holds now (not those of an export in flight).

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> processor = BatchSpanProcessor(ConsoleSpanExporter(), schedule_delay_millis=60_000)
        >>> batch = batch_of(processor)
        >>> batch._queue.append("item"); batch_waiting(batch)
        1
        >>> batch._queue.clear(); processor.shutdown()
    """
    return len(batch._queue)


def batch_exporter(batch: Any) -> Any:
    """The exporter a :func:`batch_of` batch exports to.

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> exporter = ConsoleSpanExporter()
        >>> processor = BatchSpanProcessor(exporter)
        >>> batch_exporter(batch_of(processor)) is exporter
        True
        >>> processor.shutdown()
    """
    return batch._exporter


def set_batch_exporter(batch: Any, exporter: Any) -> None:
    """Make a :func:`batch_of` batch (its queue empty) export to ``exporter`` from now on.

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> processor, other = BatchSpanProcessor(ConsoleSpanExporter()), ConsoleSpanExporter()
        >>> set_batch_exporter(batch_of(processor), other)
        >>> batch_exporter(batch_of(processor)) is other
        True
        >>> processor.shutdown()
    """
    batch._exporter = exporter


# BatchProcessor.emit as the inline copy in text_emitter was written against; any other SDK's is called as it is.
_EMIT_SOURCE: Final = """    def emit(self, data: Telemetry) -> None:
        if self._shutdown:
            _logger.info("Shutdown called, ignoring %s.", self._exporting)
            self._metrics.drop_items(1, "already_shutdown")
            return
        if self._pid != os.getpid():
            self._bsp_reset_once.do_once(self._at_fork_reinit)
        if len(self._queue) == self._max_queue_size:
            _logger.warning("Queue full, dropping %s.", self._exporting)
            self._metrics.drop_items(1)
        # This will drop a log from the right side if the queue is at _max_queue_size.
        self._queue.appendleft(data)
        if len(self._queue) >= self._max_export_batch_size and not self._worker_awaken.is_set():
            self._worker_awaken.set()
"""


def _probe_emit() -> tuple[bool, Any]:
    try:
        from opentelemetry.sdk._shared_internal import BatchProcessor
    except ImportError:  # another SDK layout
        missing("opentelemetry.sdk._shared_internal.BatchProcessor", SLOWER)
        return False, None
    try:
        known = inspect.getsource(BatchProcessor.emit) == _EMIT_SOURCE
    except (OSError, TypeError):  # pragma: no cover - sources not shipped
        known = False
    if not known:
        missing("BatchProcessor.emit (of the known source)", SLOWER)
    return known, BatchProcessor.emit if known else None


_EMIT_KNOWN, _EMIT = _probe_emit()
# This process's id, as BatchProcessor.emit compares it with the batch's: os.getpid() is a system call per span.
# Kept current in a forked child (the batch's own fork hook re-initialises it there as well).
_PID: Final = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def text_emitter(batch: Any, exporter: Any, emit: Callable[[Any], None], light_type: type,
                 light_text: Callable[[Any], str], span_text: Callable[[Any], str], text_max: int
                 ) -> Callable[[Any], None]:
    """``emit`` (a :func:`batch_of` batch's) of a span's text instead of the span, while the batch still exports
    to ``exporter``: the text of a ``light_type`` span by ``light_text``, of any other by ``span_text``; a text over
    ``text_max`` characters or one that fails goes as the span. While ``emit`` is the SDK's own ``BatchProcessor.emit``
    of the known source, its usual case (running, same process, queue not full) is done here, exactly as there,
    without its ``os.getpid()`` system call and its Python-level call per span; anything else goes to ``emit``.

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> exporter = ConsoleSpanExporter()
        >>> processor = BatchSpanProcessor(exporter)
        >>> batch = batch_of(processor)
        >>> emit = text_emitter(batch, exporter, batch.emit, str, str.upper, repr, 10)
        >>> emit("span"); emit(7); emit("a long span")  # the last one's text is over 10 characters
        >>> list(batch._queue)  # newest first: the span itself, repr of the int (not a str), the str's upper
        ['a long span', '7', 'SPAN']
        >>> batch._queue.clear(); processor.shutdown()
    """
    inline = _EMIT_KNOWN and getattr(emit, "__func__", None) is _EMIT and getattr(emit, "__self__", None) is batch

    def emit_text(span: Any) -> None:
        item = span
        if batch._exporter is exporter:
            try:
                text = light_text(span) if type(span) is light_type else span_text(span)
            except Exception:  # the span itself goes: the exporter drops it alone (and logs it)
                pass
            else:
                if len(text) <= text_max:
                    item = text
        if inline:
            queue = batch._queue
            if not batch._shutdown and batch._pid == _PID[0] and len(queue) < batch._max_queue_size:
                queue.appendleft(item)
                if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                    batch._worker_awaken.set()
                return
        emit(item)

    return emit_text


# --- providers reused across clients (their resource, their processors) ----------------------------------------

_TRACER_PROVIDER_FIELDS: Final = ("_tracers_lock", "_resource", "_tracers", "_active_span_processor")
_LOGGER_PROVIDER_FIELDS: Final = ("_active_loggers_lock", "_resource", "_active_loggers", "_multi_log_record_processor")
_METER_PROVIDER_FIELDS: Final = ("_meter_lock", "_sdk_config", "_metric_readers", "_measurement_consumer", "_meters")


def retarget_providers(tracer_provider: Any, log_provider: Any | None, meter_provider: Any | None,
                       resource: Any) -> None:
    """Make the three providers record under ``resource``, the meter provider with no metric state of before.

    OpenTelemetry has no public way to change a provider's resource (its at-fork handlers use these same private
    attributes). Everything is checked before anything is changed: :class:`InternalsMissing` (nothing changed)
    when a layout differs, and the caller builds new providers instead.

    Example:
        >>> from opentelemetry.sdk.resources import Resource
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> provider = TracerProvider(resource=Resource({"service.name": "before"}))
        >>> retarget_providers(provider, None, None, Resource({"service.name": "after"}))
        >>> provider.resource.attributes["service.name"]
        'after'
        >>> provider.shutdown()
    """
    ok = _has(tracer_provider, _TRACER_PROVIDER_FIELDS, "TracerProvider", NOT_REUSED) and _all_have(
        tracer_provider._tracers.values(), "_set_resource", "Tracer", NOT_REUSED)
    if ok and log_provider is not None:
        ok = _has(log_provider, _LOGGER_PROVIDER_FIELDS, "LoggerProvider", NOT_REUSED) and _all_have(
            list(log_provider._active_loggers), "_set_resource", "Logger", NOT_REUSED)
    consumer_type: Any = None
    config_type: Any = None
    if ok and meter_provider is not None:
        try:
            from opentelemetry.sdk.metrics._internal.measurement_consumer import SynchronousMeasurementConsumer
            from opentelemetry.sdk.metrics._internal.sdk_configuration import SdkConfiguration
        except ImportError:
            missing("opentelemetry.sdk.metrics._internal", NOT_REUSED)
            ok = False
        else:
            consumer_type, config_type = SynchronousMeasurementConsumer, SdkConfiguration
            ok = _has(meter_provider, _METER_PROVIDER_FIELDS, "MeterProvider", NOT_REUSED) and _all_have(
                meter_provider._metric_readers, "_set_collect_callback", "MetricReader", NOT_REUSED)
    if not ok:
        raise InternalsMissing("a provider's resource cannot be changed on this OpenTelemetry")
    with tracer_provider._tracers_lock:
        tracer_provider._resource = resource
        for tracer in tracer_provider._tracers.values():
            tracer._set_resource(resource)
    if log_provider is not None:
        with log_provider._active_loggers_lock:
            log_provider._resource = resource
            for logger in list(log_provider._active_loggers):
                logger._set_resource(resource)
    if meter_provider is not None:
        with meter_provider._meter_lock:
            old = meter_provider._sdk_config
            config = config_type(exemplar_filter=old.exemplar_filter, resource=resource, views=old.views)
            consumer = consumer_type(sdk_config=config, metric_readers=meter_provider._metric_readers)
            # The previous client's instruments keep the old consumer: they record into nothing, as after a shutdown.
            meter_provider._sdk_config = config
            meter_provider._measurement_consumer = consumer
            meter_provider._meters.clear()
            for reader in meter_provider._metric_readers:
                reader._set_collect_callback(consumer.collect)


def log_processors(log_provider: Any) -> tuple[Any, ...] | None:
    """The log record processors of ``log_provider`` (an SDK ``LoggerProvider``), or ``None`` on another layout.

    Example:
        >>> from opentelemetry.sdk._logs import LoggerProvider
        >>> from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, SimpleLogRecordProcessor
        >>> provider, processor = LoggerProvider(), SimpleLogRecordProcessor(ConsoleLogRecordExporter())
        >>> provider.add_log_record_processor(processor)
        >>> log_processors(provider) == (processor,)
        True
        >>> provider.shutdown()
    """
    multi = getattr(log_provider, "_multi_log_record_processor", None)
    processors = getattr(multi, "_log_record_processors", None)
    if type(processors) is not tuple:
        missing("LoggerProvider._multi_log_record_processor._log_record_processors", NOT_REUSED)
        return None
    return processors


def drop_added_processors(tracer_provider: Any, own_span_processor: Any, log_provider: Any | None,
                          own_log_processors: tuple[Any, ...]) -> list[Any]:
    """Leave only ``own_span_processor`` on ``tracer_provider`` and ``own_log_processors`` on ``log_provider``;
    returns the processors taken off (to be shut down). :class:`InternalsMissing` (nothing changed) on another
    layout: the caller does not reuse the providers then.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        >>> provider = TracerProvider()
        >>> own, added = SimpleSpanProcessor(ConsoleSpanExporter()), SimpleSpanProcessor(ConsoleSpanExporter())
        >>> provider.add_span_processor(own); provider.add_span_processor(added)
        >>> drop_added_processors(provider, own, None, ()) == [added]
        True
        >>> provider.shutdown()
    """
    spans = getattr(tracer_provider, "_active_span_processor", None)
    logs = None if log_provider is None else getattr(log_provider, "_multi_log_record_processor", None)
    if spans is None or not (_has(spans, ("_lock", "_span_processors"), "SynchronousMultiSpanProcessor", NOT_REUSED)
            and (log_provider is None or _has(logs, ("_lock", "_log_record_processors"),
                                              "SynchronousMultiLogRecordProcessor", NOT_REUSED))):
        raise InternalsMissing("a provider's processors cannot be removed on this OpenTelemetry")
    added: list[Any] = []
    with spans._lock:
        added += [p for p in spans._span_processors if p is not own_span_processor]
        spans._span_processors = (own_span_processor,)
    if logs is not None:
        with logs._lock:
            added += [p for p in logs._log_record_processors if p not in own_log_processors]
            logs._log_record_processors = own_log_processors
    return added


# --- parked pipelines: their worker threads stopped while no client uses them, started again on reuse -------------

# The fields pause_workers and resume_workers use, with the type each must have.
# (a batch's other fields are checked by batch_of)
_BATCH_WORKER_FIELDS: Final = (("_worker_thread", threading.Thread), ("_at_fork_reinit", Callable))
_READER_RESUME_FIELDS: Final = (("_shutdown_event", threading.Event), ("_daemon_thread", threading.Thread | None),
                                ("_at_fork_reinit", Callable))
_READER_PAUSE_FIELDS: Final = (*_READER_RESUME_FIELDS, ("_shutdown", bool))


def _workers_hold(batches: list[Any], readers: list[Any], reader_fields: Iterable[tuple[str, Any]]) -> bool:
    """Whether every batch and reader has the fields :func:`pause_workers`/:func:`resume_workers` use."""
    return all(_fields_hold(batch, _BATCH_WORKER_FIELDS, "BatchProcessor", NOT_REUSED) for batch in batches) and all(
        _fields_hold(reader, reader_fields, "PeriodicExportingMetricReader", NOT_REUSED) for reader in readers)


def metric_readers(meter_provider: Any) -> list[Any] | None:
    """The metric readers of ``meter_provider`` (an SDK ``MeterProvider``), or ``None`` on another layout.

    Example:
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        >>> reader = InMemoryMetricReader()
        >>> provider = MeterProvider(metric_readers=[reader])
        >>> metric_readers(provider) == [reader]
        True
        >>> provider.shutdown()
    """
    readers = getattr(meter_provider, "_metric_readers", None)
    if not isinstance(readers, list | tuple):
        missing("MeterProvider._metric_readers", NOT_REUSED)
        return None
    return list(readers)


def pause_workers(batches: Iterable[Any], readers: Iterable[Any], timeout_s: float) -> bool:
    """Stop the worker thread of each :func:`batch_of` batch and each periodic metric reader, their queues already
    flushed, so that a parked pipeline runs no thread; :func:`resume_workers` starts them again.

    OpenTelemetry can only shut these down for good (the batch processors and the reader each register an at-fork
    callback that is never removed, which is why pipelines are reused); stopping them the way a shutdown does,
    without the shutdown's point of no return, uses their private fields. ``False`` when a layout differs (nothing
    changed) or a thread did not end within ``timeout_s`` (an export in flight): the caller shuts the pipeline down.

    Example:
        >>> from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        >>> processor = BatchSpanProcessor(ConsoleSpanExporter())
        >>> batch = batch_of(processor)
        >>> pause_workers([batch], [], timeout_s=5), batch._worker_thread.is_alive()
        (True, False)
        >>> resume_workers([batch], []); batch._worker_thread.is_alive()
        True
        >>> processor.shutdown()
    """
    batches, readers = list(batches), list(readers)
    if not _workers_hold(batches, readers, _READER_PAUSE_FIELDS):
        return False
    if any(reader._shutdown for reader in readers):  # shut down by its user (not another layout): not reusable
        return False
    threads: list[threading.Thread] = []
    for batch in batches:
        batch._shutdown = True  # emit drops from now on, as after a shutdown; the worker's loop ends
        batch._worker_awaken.set()
        threads.append(batch._worker_thread)
    for reader in readers:
        reader._shutdown_event.set()  # the ticker's wait ends, its last collection goes to a detached output
        if reader._daemon_thread is not None:
            threads.append(reader._daemon_thread)
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def resume_workers(batches: Iterable[Any], readers: Iterable[Any]) -> None:
    """Start again the threads :func:`pause_workers` stopped (each batch's queue starts empty), the way the SDK
    restarts them in a forked child. :class:`InternalsMissing` (nothing changed, one warning) on another layout.

    Example (see :func:`pause_workers` for a resumed batch):
        >>> try:
        ...     resume_workers([object()], [])
        ... except InternalsMissing:
        ...     print("another layout")
        another layout
    """
    batches, readers = list(batches), list(readers)
    if not _workers_hold(batches, readers, _READER_RESUME_FIELDS):
        raise InternalsMissing("a parked pipeline's threads cannot be started again on this OpenTelemetry")
    for batch in batches:
        batch._shutdown = False
        batch._at_fork_reinit()
    for reader in readers:
        reader._shutdown_event.clear()
        if reader._daemon_thread is not None:  # None: an infinite interval, no thread to start
            reader._at_fork_reinit()


# --- the API's runtime context, attributes, context managers ------------------------------------------------------

def context_variable(context: ModuleType) -> tuple[Any, ContextVar[Any] | None]:
    """``(runtime context, its context variable)`` of the ``opentelemetry.context`` module while its runtime context
    is the default ``ContextVarsRuntimeContext``, whose ``attach``/``detach``/``get_current`` are that variable's
    ``set``/``reset``/``get`` (two Python-level calls less each); ``(None, None)`` for any other. Use the variable
    only while :func:`runtime_context` is still the runtime context returned.

    Example:
        >>> from opentelemetry import context
        >>> runtime, variable = context_variable(context)
        >>> variable is None or variable.get() is context.get_current()
        True
    """
    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    try:
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:  # pragma: no cover - another API layout
        return None, None
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and type(variable) is ContextVar:
        return runtime, variable
    if runtime is None or type(runtime) is ContextVarsRuntimeContext:
        missing("opentelemetry.context._RUNTIME_CONTEXT._current_context", SLOWER)
    return None, None


def runtime_context() -> Any:
    """The runtime context ``opentelemetry.context`` uses now (``None`` on a layout without one).

    Example:
        >>> from opentelemetry import context
        >>> runtime_context() is context_variable(context)[0] or context_variable(context)[0] is None
        True
    """
    return _context_module._RUNTIME_CONTEXT  # checked at import, below; read per handled call (no getattr default)


def _no_runtime_context() -> Any:
    return None


if not hasattr(_context_module, "_RUNTIME_CONTEXT"):  # pragma: no cover - another API layout
    missing("opentelemetry.context._RUNTIME_CONTEXT", SLOWER)
    runtime_context = _no_runtime_context  # context_variable is (None, None) then too


def composite_parts(propagator: Any) -> tuple[Any, ...]:
    """The propagators a ``CompositePropagator`` runs, in order; ``()`` on another layout (then it is not
    recognised as the default W3C pair, and the general propagation path runs).

    Example:
        >>> from opentelemetry.propagators.composite import CompositePropagator
        >>> composite_parts(CompositePropagator([]))
        ()
    """
    parts = getattr(propagator, "_propagators", None)
    if not isinstance(parts, list | tuple):
        missing("CompositePropagator._propagators", SLOWER)
        return ()
    return tuple(parts)


def _probe_immutable() -> bool:
    from opentelemetry.attributes import BoundedAttributes

    known = type(getattr(BoundedAttributes(immutable=False), "_immutable", None)) is bool
    if not known:
        missing("BoundedAttributes._immutable", SLOWER)
    return known


_IMMUTABLE_KNOWN: Final = _probe_immutable()


def _probe_attributes_dict() -> bool:
    known = type(getattr(_BoundedAttributes(), "_dict", None)) is dict
    if not known:
        missing("BoundedAttributes._dict", SLOWER)
    return known


_ATTRIBUTES_DICT_KNOWN: Final = _probe_attributes_dict()


def attributes_items(attributes: Any) -> Any:
    """What to read ``attributes`` through, to walk it once: the plain dict inside a ``BoundedAttributes`` (whose
    own ``items()`` takes its lock and makes a Python-level call per key: a third of the cost of sizing a small
    log record), any other mapping as it is. Read only.

    Example:
        >>> from opentelemetry.attributes import BoundedAttributes
        >>> dict(attributes_items(BoundedAttributes(attributes={"a": 1}))), attributes_items({"b": 2})
        ({'a': 1}, {'b': 2})
    """
    if _ATTRIBUTES_DICT_KNOWN and type(attributes) is _BoundedAttributes:
        return attributes._dict
    return attributes


def freeze_attributes(attributes: Any) -> Any:
    """``attributes`` (a ``BoundedAttributes``) made immutable, as the SDK's span does at its end: the same object
    where its flag is known, else an immutable copy (public constructor; same items, limits and dropped count).

    Example:
        >>> from opentelemetry.attributes import BoundedAttributes
        >>> frozen = freeze_attributes(BoundedAttributes(attributes={"a": 1}, immutable=False))
        >>> try:
        ...     frozen["b"] = 2
        ... except TypeError:
        ...     print("immutable")
        immutable
    """
    if _IMMUTABLE_KNOWN:
        attributes._immutable = True
        return attributes
    return _frozen_copy(attributes)


def _frozen_copy(attributes: Any) -> Any:
    from opentelemetry.attributes import BoundedAttributes

    copy = BoundedAttributes(attributes.maxlen, attributes, immutable=True, max_value_len=attributes.max_value_len)
    copy.dropped = attributes.dropped
    return copy


_DECORATOR_COST: Final = ("contextlib.contextmanager instead: the same telemetry, except that a span of"
                          " start_as_current_span used as the decorator of a coroutine function ends when the"
                          " coroutine is made, not when it returns")


def agnostic_contextmanager(function: Callable[..., Any]) -> Callable[..., Any]:
    """The API's ``_agnosticcontextmanager`` (a context manager usable as a decorator of coroutines too, as the
    SDK tracer's ``start_as_current_span``), else ``contextlib.contextmanager``.

    Example:
        >>> @agnostic_contextmanager
        ... def scope(name):
        ...     yield name.upper()
        >>> with scope("work") as value:
        ...     value
        'WORK'
    """
    try:
        from opentelemetry.util._decorator import _agnosticcontextmanager
    except ImportError:
        missing("opentelemetry.util._decorator._agnosticcontextmanager", _DECORATOR_COST)
        return contextlib.contextmanager(function)
    return _agnosticcontextmanager(function)
