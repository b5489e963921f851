"""A cheaper span for the one span every handled invocation opens (``call <function id>``, kind SERVER).

Why: with the OpenTelemetry SDK's own ``Tracer.start_span`` and ``Span.end`` the handler span cost more CPU than
everything else a callee does per call (issue 10). :class:`HandlerSpans` makes the same span (same ids from the
provider's id generator, same sampling, same parent, status, attributes, events, limits, resource and scope) as an
OpenTelemetry-API :class:`~opentelemetry.trace.Span` of its own, and hands it, once ended, straight to the
provider's one span processor (our batch processor); our exporter serialises it like an SDK ``ReadableSpan``.

It is used only while the result is provably the same as the SDK's: the provider is ours, its only span processor
is ours (:class:`OwnTracerProvider` notices any other, e.g. a user's ``add_span_processor``), the sampler is the
default ``ParentBased(ALWAYS_ON)`` (``OTEL_TRACES_SAMPLER`` unset), the SDK's own span metrics and the SDK itself
are not switched off or on by environment. Otherwise :meth:`HandlerSpans.usable` is false and the SDK tracer runs.

Example:
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> provider = OwnTracerProvider()
    >>> exporter = InMemorySpanExporter()
    >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
    >>> spans = HandlerSpans(provider, "demo")
    >>> span = spans.start("call f", None)
    >>> span.set_status(Status(StatusCode.OK)); span.end()
    >>> [(s.name, s.kind.name, s.status.status_code.name) for s in exporter.get_finished_spans()]
    [('call f', 'SERVER', 'OK')]
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import re
import time
import traceback
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from .otel_internals import batch_exporter, batch_of, context_variable, freeze_attributes, text_emitter
from .telemetry_exporters import EngineSpanExporter, span_text, span_text_pieces

__all__ = ["HandlerSpans", "LightSpan", "OwnTracerProvider", "context_variable", "span_context"]

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Every span starts UNSET; a Status never changes once made, so one serves them all.
_UNSET = Status(StatusCode.UNSET)
_TRUE = ("true", "1", "yes", "on")
# Environment that changes what the SDK's tracer does in ways LightSpan does not copy.
_SDK_SETTINGS = ("OTEL_TRACES_SAMPLER",)
_SDK_SWITCHES = ("OTEL_SDK_DISABLED", "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED")


class OwnTracerProvider(TracerProvider):
    """The SDK's ``TracerProvider`` that remembers its first span processor and whether any other was added.

    Example:
        >>> OwnTracerProvider().shared
        False
    """

    def __init__(self, **kwargs: Any) -> None:
        self.span_limits: SpanLimits = kwargs.setdefault("span_limits", SpanLimits())
        super().__init__(**kwargs)
        self.own_processor: SpanProcessor | None = None
        self.shared = False  # another processor (a user's) sees spans too: every span must be the SDK's then

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        """Add ``span_processor`` (the first one is ours; any later one turns the light spans off)."""
        if self.own_processor is None:
            self.own_processor = span_processor
        else:
            self.shared = True
        super().add_span_processor(span_processor)


class HandlerSpans:
    """Starts :class:`LightSpan` handler spans for ``provider`` (see the module docstring for when)."""

    def __init__(self, provider: OwnTracerProvider, scope_name: str) -> None:
        self._provider = provider
        self._ids = provider.id_generator
        self._limits = provider.span_limits
        self._resource = provider.resource
        self._scope = InstrumentationScope(scope_name)  # what provider.get_tracer(scope_name) records
        self._child_flags: dict[TraceFlags, TraceFlags] = {}  # a parent's flags -> its child's (at most 256)
        # (the provider's own processor, its batch emit when LightSpans may go there directly, see _batch_emit)
        self._hooks: tuple[SpanProcessor, Callable[[Any], None] | None] | None = None
        self._environment_ok = not any(os.environ.get(name, "").strip() for name in _SDK_SETTINGS) and not any(
            os.environ.get(name, "").strip().lower() in _TRUE for name in _SDK_SWITCHES
        )

    def usable(self) -> bool:
        """Whether a light span is exactly what the SDK's tracer would produce now."""
        return self._environment_ok and not self._provider.shared and self._provider.own_processor is not None

    def start(self, name: str, parent: Context | None, kind: SpanKind = SpanKind.SERVER) -> trace.Span:
        """A started span named ``name`` whose parent is the span of ``parent``: what ``Tracer.start_span(name,
        context=parent, kind=kind)`` of the provider's tracer returns (a ``NonRecordingSpan`` when not sampled)."""
        return self.start_child(name, trace.get_current_span(parent).get_span_context(), parent, kind)

    def start_child(
        self, name: str, parent_context: SpanContext, parent: Context | None, kind: SpanKind = SpanKind.SERVER
    ) -> trace.Span:
        """:meth:`start` given the parent's span context itself; ``parent`` (the context holding it) only goes to
        the span processor's ``on_start``."""
        ids = self._ids
        # is_valid is a Python-level property; a plain SpanContext holds it at position 5 (layout checked below)
        if parent_context[5] if type(parent_context) is SpanContext and _TUPLE_LAYOUT else parent_context.is_valid:
            trace_id = parent_context.trace_id
            parent_flags = parent_context.trace_flags
            # Only TraceFlags are looked up (a plain int equal to a cached one must fail on .sampled as the SDK's
            # sampler does) and only the 256 a traceparent can carry are kept (another propagator may make any).
            flags = self._child_flags.get(parent_flags) if type(parent_flags) is TraceFlags else None
            if flags is None:
                flags = _child_flags(parent_flags.sampled, parent_flags.random_trace_id)
                if type(parent_flags) is TraceFlags and 0 <= parent_flags <= 0xFF:
                    self._child_flags[parent_flags] = flags
            context = span_context(trace_id, ids.generate_span_id(), False, flags, parent_context.trace_state)
            parent_or_none: SpanContext | None = parent_context
        else:
            parent_or_none = None
            if type(ids) is RandomIdGenerator and _plain_random_ids(ids):
                trace_id, span_id = _random_root_ids()
                flags = _ROOT_FLAGS[1]
                # Both ids are in range and not zero: valid, without span_context's checks.
                context = _new_tuple(SpanContext, (trace_id, span_id, False, flags, _DEFAULT_TRACE_STATE, True)) \
                    if _TUPLE_LAYOUT else SpanContext(trace_id, span_id, False, flags)
            else:
                trace_id = ids.generate_trace_id()
                flags = _ROOT_FLAGS[1] if ids.is_trace_id_random() else _ROOT_FLAGS[0]  # ParentBased(root=ALWAYS_ON)
                context = span_context(trace_id, ids.generate_span_id(), False, flags)
        if not flags & TraceFlags.SAMPLED:  # ParentBased: follow the parent
            return trace.NonRecordingSpan(context)
        return self._open(name, context, parent_or_none, kind, parent)

    def begin(self, name: str, traceparent: str | None) -> LightSpan | None:
        """The SERVER span of one handled call whose caller sent ``traceparent`` (``None`` or empty: none), its
        response ``traceparent`` already in ``_traceparent``: what ``start_child(name, <the remote parent>, None)``
        returns, without the ten or so Python-level calls of parsing the header and starting the span in steps
        (issue 10). ``None`` where only that path can say: not :meth:`usable`, another ``SpanContext`` layout, an
        id generator other than the SDK's plain random one, a ``traceparent`` not in the plain
        ``00-<trace>-<span>-<flags>`` form or naming a zero id, a parent not sampled (its span does not record).

        Example:
            >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
            >>> provider = OwnTracerProvider()
            >>> provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
            >>> span = HandlerSpans(provider, "demo").begin("call f", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
            >>> span._traceparent[:36] == "00-" + "ab" * 16 + "-", span.parent.span_id == 0xCDCDCDCDCDCDCDCD
            (True, True)
        """
        provider = self._provider
        if not (self._environment_ok and not provider.shared and provider.own_processor is not None
                and _TUPLE_LAYOUT):
            return None
        ids = self._ids
        # _plain_random_ids(ids), inline: the generator's draws are made here (see _random_root_ids) while it holds;
        # any other generator is asked by start_child, exactly as the SDK's tracer asks it
        if not (type(ids) is RandomIdGenerator and _RANDOM_KNOWN and not ids.__dict__ and (
                RandomIdGenerator.generate_trace_id is _RANDOM_METHODS[0]
                and RandomIdGenerator.generate_span_id is _RANDOM_METHODS[1]
                and RandomIdGenerator.is_trace_id_random is _RANDOM_METHODS[2])):
            return None
        if traceparent:
            match = _PLAIN_TRACEPARENT.fullmatch(traceparent)
            if match is None:
                return None
            trace_hex, parent_hex, flags_hex = match.groups()
            if trace_hex == _ZERO_TRACE or parent_hex == _ZERO_SPAN:
                return None  # invalid: the general path ignores it
            parent_flags, flags, flags_text = _REMOTE_FLAGS[flags_hex]
            if flags_text is None:
                return None  # not sampled: a NonRecordingSpan, made by start_child
            trace_id = int(trace_hex, 16)
            # What the W3C propagator extracts (remote, default trace state) and the child's, both valid by the checks
            # above (32 and 16 hex digits, not zero).
            parent: SpanContext | None = _new_tuple(
                SpanContext, (trace_id, int(parent_hex, 16), True, parent_flags, _DEFAULT_TRACE_STATE, True))
            getrandbits = random.getrandbits
            span_id = getrandbits(64)
            while not span_id:
                span_id = getrandbits(64)
        else:
            parent = None
            trace_id, span_id = _random_root_ids()
            flags = _ROOT_FLAGS[1]
            flags_text = _FLAGS_TEXT[flags]
            trace_hex = trace_id.to_bytes(16, "big").hex()
        context = _new_tuple(SpanContext, (trace_id, span_id, False, flags, _DEFAULT_TRACE_STATE, True))
        # _open(), inline while the span goes straight to the batch (a Python-level call less per span)
        processor = provider.own_processor
        hooks = self._hooks
        emit = hooks[1] if hooks is not None and hooks[0] is processor else None
        if emit is not None and BatchSpanProcessor.on_end is _ON_END and BatchSpanProcessor.on_start is _ON_START \
                and "on_end" not in (own := processor.__dict__) and "on_start" not in own:
            span = LightSpan(name, context, parent, SpanKind.SERVER, self._limits, self._resource, self._scope,
                             processor)
            span._on_end = emit
        else:
            span = self._open(name, context, parent, SpanKind.SERVER, None)
        # plain_traceparent(context), from the pieces at hand: the trace id's digits are the caller's (lower case,
        # 32 of them, as to_bytes(16).hex() writes the same int)
        span._traceparent = f"00-{trace_hex}-{span_id.to_bytes(8, 'big').hex()}-{flags_text}"
        if parent is not None:
            span._parent_hex = (parent, parent_hex)
        return span

    def _open(
        self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind, parent_ctx: Context | None
    ) -> LightSpan:
        """A recording span with ``context``, started and handed to the span processor's ``on_start`` (or set up to
        go straight to its batch at the end, see :func:`_batch_emit`)."""
        processor = self._provider.own_processor
        assert processor is not None  # usable() was checked
        hooks = self._hooks
        if hooks is None or hooks[0] is not processor:
            hooks = self._hooks = (processor, _batch_emit(processor, self._resource, self._scope))
        emit = hooks[1]
        # _hooks_intact(processor), inline (a Python-level call less per span)
        if emit is not None and not (BatchSpanProcessor.on_end is _ON_END and BatchSpanProcessor.on_start is _ON_START
                                     and "on_end" not in (own := processor.__dict__) and "on_start" not in own):
            emit = None
        span = LightSpan(name, context, parent, kind, self._limits, self._resource, self._scope, processor)
        if emit is None:
            processor.on_start(span, parent_context=parent_ctx)  # type: ignore[arg-type]  # duck-typed like an SDK Span
        else:
            span._on_end = emit
        return span


# RandomIdGenerator's methods as the root-span draws in HandlerSpans.start_child were written against.
_RANDOM_SOURCES: Final = (
    "    def generate_trace_id(self) -> int:\n        trace_id = random.getrandbits(128)\n"
    "        while trace_id == trace.INVALID_TRACE_ID:\n            trace_id = random.getrandbits(128)\n"
    "        return trace_id\n",
    "    def generate_span_id(self) -> int:\n        span_id = random.getrandbits(64)\n"
    "        while span_id == trace.INVALID_SPAN_ID:\n            span_id = random.getrandbits(64)\n"
    "        return span_id\n",
    "    def is_trace_id_random(self) -> bool:\n        return True\n",
)
_RANDOM_METHODS: Final = (RandomIdGenerator.generate_trace_id, RandomIdGenerator.generate_span_id,
                          RandomIdGenerator.is_trace_id_random)


def _probe_random_ids() -> bool:
    try:
        return tuple(inspect.getsource(method) for method in _RANDOM_METHODS) == _RANDOM_SOURCES \
            and trace.INVALID_TRACE_ID == 0 and trace.INVALID_SPAN_ID == 0
    except (OSError, TypeError):  # pragma: no cover - sources not shipped
        return False


_RANDOM_KNOWN: Final = _probe_random_ids()


def _random_root_ids() -> tuple[int, int]:
    """``(trace id, span id)`` of a root span, as RandomIdGenerator's methods of the known source draw them: the same
    draws in the same order (the SDK's tracer asks for the trace id first), without their three Python-level calls.
    Only while :func:`_plain_random_ids` holds."""
    getrandbits = random.getrandbits
    trace_id = getrandbits(128)
    while not trace_id:
        trace_id = getrandbits(128)
    span_id = getrandbits(64)
    while not span_id:
        span_id = getrandbits(64)
    return trace_id, span_id


def _plain_random_ids(ids: RandomIdGenerator) -> bool:
    """Whether ``ids`` (a ``RandomIdGenerator``) would run the methods of the known source: checked per span, as
    :func:`_hooks_intact` is, so a method patched later (on the class or the instance) is called again."""
    return _RANDOM_KNOWN and not ids.__dict__ and (
        RandomIdGenerator.generate_trace_id, RandomIdGenerator.generate_span_id, RandomIdGenerator.is_trace_id_random
    ) == _RANDOM_METHODS


# BatchSpanProcessor's on_start and on_end as this module was written against: on_start does nothing, and on_end of a
# sampled span (every LightSpan is one) hands it to its batch processor's emit. Only while the installed SDK's two
# methods read exactly so does a LightSpan skip them and go to emit straight away (two calls and three Python-level
# property reads less per span); any other SDK takes the methods themselves.
_BATCH_HOOKS: Final = (
    "    def on_start(self, span: Span, parent_context: Context | None = None) -> None:\n        pass\n",
    "    def on_end(self, span: ReadableSpan) -> None:\n"
    "        if not (span.context and span.context.trace_flags.sampled):\n"
    "            return\n"
    "        self._batch_processor.emit(span)\n",
)


def _probe_batch_hooks() -> bool:
    try:
        return (inspect.getsource(BatchSpanProcessor.on_start), inspect.getsource(BatchSpanProcessor.on_end)) \
            == _BATCH_HOOKS
    except (OSError, TypeError):  # pragma: no cover - sources not shipped
        return False


_BATCH_HOOKS_KNOWN: Final = _probe_batch_hooks()


# The two functions the source check above read: a LightSpan skips them only while they are still the ones called.
_ON_START: Final = BatchSpanProcessor.on_start
_ON_END: Final = BatchSpanProcessor.on_end


def _hooks_intact(processor: SpanProcessor) -> bool:
    """Whether ``processor`` (a :class:`BatchSpanProcessor`) would still run the checked ``on_start``/``on_end``.

    Checked per span, not once: a hook replaced later (``mock.patch.object`` on the processor, an agent wrapping
    the class's method after import) must see every span that ends from then on, as with an SDK span."""
    own = processor.__dict__
    return (BatchSpanProcessor.on_end is _ON_END and BatchSpanProcessor.on_start is _ON_START
            and "on_end" not in own and "on_start" not in own)


def _batch_emit(processor: SpanProcessor, resource: Any, scope: InstrumentationScope) -> Callable[[Any], None] | None:
    """What an ended LightSpan of ``resource`` and ``scope`` is handed to when ``processor``'s ``on_start``/``on_end``
    may be skipped (see above): its batch emit, or :func:`_text_emit` of it when the batch's exporter is ours; ``None``
    (the processor's own hooks run) where :func:`iii.otel_internals.batch_of` finds another batch layout."""
    if not _BATCH_HOOKS_KNOWN or type(processor) is not BatchSpanProcessor:
        return None
    batch = batch_of(processor)
    if batch is None:
        return None
    emit: Callable[[Any], None] | None = getattr(batch, "emit", None)
    exporter = batch_exporter(batch)
    if emit is not None and type(exporter) is EngineSpanExporter and exporter.take_texts(resource, scope):
        return _text_emit(batch, exporter, emit)
    return emit


def _text_emit(batch: Any, exporter: EngineSpanExporter, emit: Callable[[Any], None]) -> Callable[[Any], None]:
    """``emit`` of a span's text instead of the span, while ``batch`` (the processor's batch, whose ``emit`` this
    is) still exports to ``exporter``, which takes texts of these spans (:meth:`EngineSpanExporter.take_texts`).

    Why (issue 10): a batch holds up to 512 ended spans; as spans they were several objects each for the garbage
    collector to walk over and over (its collections cost the callee about as much as ending the spans), as texts
    they are none. The text is what the exporter would write for the span (:func:`span_text`, the same function,
    or :func:`light_text`, the same bytes), and an ended span never changes, so the frame is the same byte for
    byte. The batch's usual case is done inline by :func:`iii.otel_internals.text_emitter` (the one module that
    reads the batch's private fields)."""
    return text_emitter(batch, exporter, emit, LightSpan, light_text, span_text, _TEXT_QUEUED_MAX)


def light_text(span: LightSpan) -> str:
    """:func:`span_text` of a :class:`LightSpan`, the same text: for the usual handler span (no attributes, events
    or links; plain int times; its traceparent already written, see :func:`plain_traceparent`) from that
    traceparent's ids and the exporter's cached pieces (:func:`span_text_pieces`), otherwise :func:`span_text`.

    Example:
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        >>> provider = OwnTracerProvider()
        >>> provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        >>> span = HandlerSpans(provider, "demo").start("call f", None)
        >>> span._traceparent = plain_traceparent(span.get_span_context())
        >>> span.end_time = span.start_time
        >>> span_text(span) == light_text(span)  # the first fills the cached pieces the second uses
        True
    """
    traceparent = span._traceparent
    start = span.start_time
    end = span.end_time
    if traceparent is None or type(start) is not int or type(end) is not int or (
            span._attributes or span._events or span._links):
        return span_text(span)
    parent = span.parent
    if parent is None:
        parent_text = "}"
    else:
        known_parent = span._parent_hex
        if known_parent is not None and known_parent[0] is parent:
            parent_hex = known_parent[1]
        else:
            parent_id = parent[1] if type(parent) is SpanContext and _TUPLE_LAYOUT else None
            if type(parent_id) is not int or not 0 <= parent_id <= _SPAN_ID_MAX:
                return span_text(span)
            parent_hex = parent_id.to_bytes(8, "big").hex()
        parent_text = f',"parentSpanId":"{parent_hex}"}}'
    name = span._name
    kind = span.kind
    status = span._status
    pieces = _LIGHT_PIECES.get(name) if type(name) is str else None
    if pieces is None or pieces[0] is not kind or pieces[1] is not status:
        known = span_text_pieces(name, kind, status)
        if known is None:
            return span_text(span)  # which caches them for the next span
        if len(_LIGHT_PIECES) >= _LIGHT_PIECES_MAX:
            _LIGHT_PIECES.clear()
        pieces = _LIGHT_PIECES[name] = (kind, status, *known)
    return (f'{{"traceId":"{traceparent[3:35]}","spanId":"{traceparent[36:52]}",{pieces[2]},'
            f'"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}",{pieces[3]}{parent_text}')


# span_text_pieces by span name (one str lookup, not two keyed by identities), for the kind and status objects kept
# with them (the text of a kind and of a status without description never changes). Cleared when full.
_LIGHT_PIECES: dict[str, tuple[Any, Any, str, str]] = {}
_LIGHT_PIECES_MAX: Final = 256


# A longer text waits as its span instead: a text copies the span's strings, escaped (up to 6 characters for one) and
# at the widest character's width, while the span shares them (a 100 kB string set on every span was held once by
# the queue's spans, once per span as texts). Handler spans' texts are well under 1 kB; this bounds what one queued
# text holds beyond the span's own strings.
_TEXT_QUEUED_MAX: Final = 16_384


def _child_flags(sampled: bool, random_trace_id: bool) -> TraceFlags:
    flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
    if random_trace_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    return TraceFlags(flags)


# A root span's flags (sampled; random trace id or not): made once, not per root span (TraceFlags never change).
_ROOT_FLAGS: tuple[TraceFlags, TraceFlags] = (_child_flags(True, False), _child_flags(True, True))

_TRACE_ID_MAX = 2**128 - 1
_SPAN_ID_MAX = 2**64 - 1


def span_context(
    trace_id: int, span_id: int, is_remote: bool, trace_flags: TraceFlags, trace_state: TraceState | None = None
) -> SpanContext:
    """``SpanContext(trace_id, span_id, is_remote, trace_flags, trace_state)``, the same tuple built without the
    Python-level ``__new__`` (a handler run makes two: its parent's and its own).

    Example:
        >>> span_context(1, 2, True, TraceFlags(1)) == SpanContext(1, 2, True, TraceFlags(1))
        True
    """
    if not _TUPLE_LAYOUT:
        return SpanContext(trace_id, span_id, is_remote, trace_flags, trace_state)
    return _new_tuple(
        SpanContext,
        (
            trace_id,
            span_id,
            is_remote,
            trace_flags,
            _DEFAULT_TRACE_STATE if trace_state is None else trace_state,
            0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX,
        ),
    )


def traceparent_text(context: SpanContext) -> str:
    """``context`` as a ``traceparent`` header's text, as ``TraceContextTextMapPropagator`` writes it; a plain
    ``SpanContext`` is read by position (the layout checked below), anything else through its properties.

    Example:
        >>> traceparent_text(SpanContext(1, 2, False, TraceFlags(1)))
        '00-00000000000000000000000000000001-0000000000000002-01'
    """
    text = plain_traceparent(context)
    if text is not None:
        return text
    if type(context) is SpanContext and _TUPLE_LAYOUT:
        trace_id, span_id, _, trace_flags = context[:4]
    else:
        trace_id, span_id, trace_flags = context.trace_id, context.span_id, context.trace_flags
    # %-formatting: the same text as the propagator's f-string with format specs, in half the time.
    return "00-%032x-%016x-%02x" % (trace_id, span_id, trace_flags)  # noqa: UP031 - see the comment above


def plain_traceparent(context: SpanContext) -> str | None:
    """:func:`traceparent_text` of a plain ``SpanContext`` whose ids are ints in range and whose flags are
    ``TraceFlags`` of one byte, written from their bytes (a third of the time of the %-format); ``None`` for any
    other, whose text :func:`traceparent_text` writes. Its ids are then exactly the 32 and 16 hex digits an export
    text writes for them (``traceparent[3:35]``, ``traceparent[36:52]``)."""
    if type(context) is not SpanContext or not _TUPLE_LAYOUT:
        return None
    trace_id, span_id, _, trace_flags = context[:4]
    if type(trace_id) is not int or type(span_id) is not int or type(trace_flags) is not TraceFlags:
        return None
    flags = _FLAGS_TEXT.get(trace_flags)
    if flags is None:
        return None
    try:
        return f"00-{trace_id.to_bytes(16, 'big').hex()}-{span_id.to_bytes(8, 'big').hex()}-{flags}"
    except OverflowError:  # negative or too large: the %-format writes those
        return None


# A traceparent's flags field by the flags' value (a TraceFlags is an int: hashed and compared as one).
_FLAGS_TEXT: Final = {value: "%02x" % value for value in range(256)}  # noqa: UP031 - the propagator's format

# A version-00 traceparent exactly as our SDK and the reference write it; anything else goes the generic way.
_PLAIN_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
# A plain traceparent's flags field -> (the remote parent's TraceFlags, its child's, the child's flags field or None
# when the parent is not sampled): what remote_parent, _child_flags and plain_traceparent make of it, made once.
_REMOTE_FLAGS: Final = {
    text: (TraceFlags(value), child, _FLAGS_TEXT[child] if child & TraceFlags.SAMPLED else None)
    for text, value in ((text, int(text, 16)) for text in _FLAGS_TEXT.values())
    for child in (_child_flags(TraceFlags(value).sampled, TraceFlags(value).random_trace_id),)
}


_new_tuple = tuple.__new__
_DEFAULT_TRACE_STATE = DEFAULT_TRACE_STATE
# The layout span_context relies on (the API's since 1.0); checked once so another layout takes the constructor.
_TUPLE_LAYOUT = all(
    tuple.__new__(SpanContext, (t, s, r, f, DEFAULT_TRACE_STATE, v)) == SpanContext(t, s, r, f)
    and tuple(SpanContext(t, s, r, f)) == (t, s, r, f, DEFAULT_TRACE_STATE, v)
    for t, s, r, f, v in (
        (1, 2, True, TraceFlags(1), True),
        (0, 2, False, TraceFlags(0), False),
        (1, 2**64, False, TraceFlags(3), False),
    )
)


class LightSpan(trace.Span):
    """An OpenTelemetry-API span recording only what the exporter sends; readable like an SDK ``ReadableSpan``.

    Behaves like the SDK's span for everything a handler can do with the current span: attributes (same
    cleaning and limits), events, links, ``record_exception``, status rules (``OK`` is final, ``UNSET`` ignored),
    ``update_name``, warnings on use after ``end``.
    """

    # What every span starts with, kept on the class: a handler span is made per handled call and most keep these.
    _on_end: Callable[[Any], None] | None = None  # what end() hands the span to, if not processor.on_end
    _attributes: BoundedAttributes | None = None
    _events: BoundedList[Event] | None = None
    _links: BoundedList[trace.Link] | None = None
    _status: Status = _UNSET
    end_time: int | None = None
    # Its traceparent text once asked for (see plain_traceparent): the response header of a handler run, whose
    # ids the span's export text copies instead of writing them again.
    _traceparent: str | None = None
    # (the parent, its span id's 16 hex digits) when begin() read them from the caller's traceparent: the digits an
    # export text writes for that parent (lower case, as to_bytes(8).hex() writes the same int), kept with the
    # parent they name so a parent set since is written from its own id.
    _parent_hex: tuple[SpanContext, str] | None = None

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        limits: SpanLimits,
        resource: Any,
        scope: InstrumentationScope,
        processor: SpanProcessor,
    ) -> None:
        self._name = name
        self._context = context
        self.parent = parent
        self.kind = kind
        self._limits = limits
        self.resource = resource
        self.instrumentation_scope = scope
        self._processor = processor
        self.start_time: int = _time_ns()

    # ------------------------------------------------------------ what the exporter and processors read

    @property
    def name(self) -> str:
        """The span's name."""
        return self._name

    @property
    def context(self) -> SpanContext:
        """The span's context."""
        return self._context

    @property
    def status(self) -> Status:
        """The span's status."""
        return self._status

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span's attributes."""
        return self._attributes if self._attributes is not None else _EMPTY

    @property
    def events(self) -> tuple[Event, ...]:
        """The span's events."""
        return tuple(self._events) if self._events is not None else ()

    @property
    def links(self) -> tuple[trace.Link, ...]:
        """The span's links."""
        return tuple(self._links) if self._links is not None else ()

    # ------------------------------------------------------------ the API

    def get_span_context(self) -> SpanContext:
        """The span's context."""
        return self._context

    def is_recording(self) -> bool:
        """True until ended."""
        return self.end_time is None

    def _ended(self, what: str) -> bool:
        if self.end_time is None:
            return False
        log.warning("Tried calling %s on an ended span.", what)
        return True

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes (cleaned and bounded like the SDK's)."""
        if self.end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        for key, value in attributes.items():
            self._attribute_map()[key] = value

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (cleaned and bounded like the SDK's)."""
        if self.end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        self._attribute_map()[key] = value

    def _attribute_map(self) -> BoundedAttributes:
        attributes = self._attributes
        if attributes is None:
            limits = self._limits
            attributes = self._attributes = BoundedAttributes(
                limits.max_span_attributes, None, immutable=False, max_value_len=limits.max_span_attribute_length
            )
        return attributes

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        """Add an event (its attributes bounded like the SDK's)."""
        if self._ended("_add_event"):
            return
        limits = self._limits
        bounded = BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Add a link (ignored for an invalid context without attributes, like the SDK)."""
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return  # what the SDK's _is_valid_link rejects
        if self._ended("_add_link"):
            return
        limits = self._limits
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )
        if self._links is None:
            self._links = BoundedList(limits.max_links)
        self._links.append(trace.Link(context=context, attributes=bounded))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status: ``OK`` is final and ``UNSET`` is ignored, as in the SDK."""
        if self._ended("set_status"):
            return
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                log.warning("Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description)
            self._status = status
        elif isinstance(status, StatusCode) and status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record ``exception`` as an ``exception`` event, with the SDK's attributes."""
        stacktrace = "".join(traceback.format_exception(exception))
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        exception_type = f"{module}.{qualname}" if module and module != "builtins" else qualname
        event: dict[str, AttributeValue] = {
            "exception.type": exception_type,
            "exception.message": str(exception),
            "exception.stacktrace": stacktrace,
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event(name="exception", attributes=event, timestamp=timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End the span and hand it to the span processor (a warning if it already ended)."""
        # The clock is read before the check: a thread switch can come in that call, but not between the check and
        # the store below (plain attribute reads and writes), so a span ended from two threads at once is handed
        # over once (the SDK's span takes a lock for this).
        now = end_time if end_time is not None else _time_ns()
        if self.end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self.end_time = now
        attributes = self._attributes
        if attributes is not None:
            # As the SDK's span: what ended is what is exported (its text is written now), so a later write to the
            # mapping fails instead of being lost unseen.
            self._attributes = freeze_attributes(attributes)
        on_end = self._on_end
        if on_end is not None:
            on_end(self)
        else:
            self._processor.on_end(self)  # type: ignore[arg-type]  # read like a ReadableSpan

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        """End the span; an exception marks it ``ERROR`` (the handler span never records it: the SDK's span is
        started with ``record_exception=False`` too)."""
        if exc_val is not None and self.is_recording():
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'


# The SDK stamps spans with time.time_ns (through opentelemetry.util._time, private): the same clock.
_time_ns = time.time_ns
