"""Issue 10, the callee's per-call telemetry: the cached middle pieces of a span's text (``span_text``), one group
for a batch from one resource and scope (``serialize_spans``), ``trace_headers`` on the empty context, and the
handler span's status set in place (``TraceScope.start``) change no byte and no header."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator, default_setter
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from iii import OtelConfig, light_span, telemetry, telemetry_exporters
from iii.telemetry_exporters import serialize_spans
from iii.trace_scope import TraceScope
from tests.unit.test_telemetry_speed_serialize import _dict_document, _Span


@pytest.fixture
def handler_tracer() -> Iterator[Any]:
    telemetry.shutdown_otel()
    telemetry.init_otel(
        OtelConfig(enabled=True, service_name="pieces", service_instance_id="i1", fetch_instrumentation_enabled=False,
                   metrics_enabled=False, logs_enabled=False),
        frame_sink=lambda frame: None,
    )
    try:
        yield telemetry.get_tracer()
    finally:
        telemetry.shutdown_otel()


def _ended(span: Any) -> Any:
    span.end_time = time.time_ns()  # ended without the processor: serialised here only
    return span


def test_spans_written_from_cached_pieces_are_the_same_bytes(handler_tracer: Any) -> None:
    ok = Status(StatusCode.OK)
    parent = telemetry.extract_context(f"00-{2**127 + 5:032x}-{2**63 + 9:016x}-01", None)
    spans = []
    for n in range(3):
        for name in ("call a", 'call \u00e9"\n'):
            for ctx in (parent, None):
                span = telemetry.start_handler_span(handler_tracer, name, ctx)
                if n:
                    span.set_status(ok)  # one status object for all: its piece is cached
                spans.append(_ended(span))
    assert type(spans[0]).__name__ == "LightSpan"
    first = serialize_spans(spans)  # fills the caches
    assert first == _dict_document(spans)
    assert serialize_spans(spans) == first  # from the cached pieces
    assert any(entry[0] is ok for entry in telemetry_exporters._tails.values())
    # Another kind of the same name, a status with a description and a span with attributes are not mistaken for them.
    odd = [_Span(1, 2, None), _Span(3, 4, 5), _Span(6, 7, None)]
    odd[0].name, odd[0].kind, odd[0].status = "call a", SpanKind.CLIENT, ok
    odd[1].name, odd[1].status = "call a", Status(StatusCode.ERROR, "bad")
    odd[2].name, odd[2].status, odd[2].attributes = "call a", ok, {"k": 1}
    for _ in range(2):
        assert serialize_spans(odd) == _dict_document(odd)
        assert serialize_spans(spans + odd) == _dict_document(spans + odd)  # two resources: grouped as before


def test_the_piece_caches_are_bounded() -> None:
    statuses = [Status(StatusCode.OK) for _ in range(telemetry_exporters._PIECES_MAX + 10)]
    for n, status in enumerate(statuses):
        span = _Span(1, 2, None)
        span.name, span.status = f"call g{n}", status
        assert serialize_spans([span]) == _dict_document([span])
    assert len(telemetry_exporters._heads) <= telemetry_exporters._PIECES_MAX
    assert len(telemetry_exporters._tails) <= telemetry_exporters._PIECES_MAX


class _Constant(TextMapPropagator):
    """A propagator writing headers whatever the context holds."""

    def extract(self, carrier: CarrierT, context: context.Context | None = None, getter: Any = None) -> Any:
        return context or {}

    def inject(self, carrier: CarrierT, context: context.Context | None = None,
               setter: Setter[CarrierT] = default_setter) -> None:
        setter.set(carrier, "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        setter.set(carrier, "baggage", "k=v")

    @property
    def fields(self) -> set[str]:
        return {"traceparent", "baggage"}


def test_trace_headers_of_the_empty_context() -> None:
    assert context.get_current() == {}
    assert telemetry.trace_headers() == (None, None)
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(_Constant())
    try:  # only the default propagators write nothing for the empty context
        assert telemetry.trace_headers() == ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v")
    finally:
        propagate.set_global_textmap(previous)


def test_handler_status_set_in_place_follows_the_span_rules(handler_tracer: Any) -> None:
    scope = TraceScope(telemetry)

    async def run(handler: Any) -> Any:
        (result, _, _, _), end = await scope.start("call s", handler, None, None)
        span_holder.append(end.__self__)  # type: ignore[attr-defined]
        end()
        return result

    span_holder: list[Any] = []

    async def plain() -> int:
        return 1

    async def sets_error() -> int:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, "mine"))
        return 2

    async def ends_itself() -> int:
        trace.get_current_span().end()
        return 3

    def code() -> Any:
        return span_holder[-1].status.status_code

    assert asyncio.run(run(plain)) == 1
    assert code() is StatusCode.OK
    assert asyncio.run(run(sets_error)) == 2
    assert code() is StatusCode.OK  # OK after ERROR, as the SDK's set_status does
    assert asyncio.run(run(ends_itself)) == 3
    assert code() is StatusCode.UNSET  # ended: status no longer changes


class _Shifted(trace.SpanContext):
    """A SpanContext subclass whose trace id property says something else than its tuple field."""

    @property
    def trace_id(self) -> int:
        return 0xABC


def test_traceparent_reads_a_subclass_through_its_properties() -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    for span_context in (trace.SpanContext(7, 9, False, trace.TraceFlags(1)),
                         _Shifted(7, 9, False, trace.TraceFlags(1))):
        span = trace.NonRecordingSpan(span_context)
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
        assert telemetry.span_traceparent(span) == carrier["traceparent"]


class _Counting(BatchSpanProcessor):
    """Our batch processor as a subclass (its own on_start/on_end may do more): the shortcut must not skip them."""

    def __init__(self, exporter: Any) -> None:
        super().__init__(exporter)
        self.hooks: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.hooks.append("start")

    def on_end(self, span: Any) -> None:
        self.hooks.append("end")
        super().on_end(span)


@pytest.mark.parametrize("known", [True, False])
def test_light_spans_reach_the_batch_processor_with_or_without_its_hooks(known: bool,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(light_span, "_BATCH_HOOKS_KNOWN", known)  # False: an SDK whose hooks read otherwise
    for processor_type in (BatchSpanProcessor, _Counting):
        provider = light_span.OwnTracerProvider()
        exporter = InMemorySpanExporter()
        processor = processor_type(exporter)
        provider.add_span_processor(processor)
        spans = light_span.HandlerSpans(provider, "demo")
        span = spans.start("call f", None)
        assert isinstance(span, light_span.LightSpan)
        assert (span._on_end is not None) is (known and processor_type is BatchSpanProcessor)
        span.end()
        provider.force_flush()
        assert [s.name for s in exporter.get_finished_spans()] == ["call f"]
        if isinstance(processor, _Counting):
            assert processor.hooks == ["start", "end"]
        provider.shutdown()


def test_the_batch_hooks_of_the_installed_sdk_are_the_known_ones() -> None:
    # The day an SDK upgrade changes them, this fails and the LightSpans go through on_start/on_end again.
    assert light_span._BATCH_HOOKS_KNOWN
