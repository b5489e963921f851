"""``telemetry.start_handler`` (issue 10) makes the handler span and its context in one step: the same span and the
same context as ``extract_context`` + ``start_handler_span`` + ``set_span_in_context``, or ``None`` wherever only
that general path can say."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from iii import OtelConfig, telemetry
from iii.telemetry_exporters import serialize_spans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADERS = [
    (f"00-{TRACE}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE}-00f067aa0ba902b7-03", "k=v,other=x%20y"),  # sampled, random trace id
    (f"00-{TRACE}-00f067aa0ba902b7-00", "k=v"),  # not sampled: a non-recording span
    (f"00-{'f' * 32}-{'f' * 16}-ff", None),
    (None, "k=v"),
    (None, None),
    ("", ""),
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),  # upper case: invalid
    (f"01-{TRACE}-00f067aa0ba902b7-01-extra", None),  # a later version with more fields: valid
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", "k=v"),  # zero trace id
    (f"00-{TRACE}-{'0' * 16}-01", None),  # zero span id
    ("garbage", "k=v"),
]


class _Counting(IdGenerator):
    def __init__(self) -> None:
        self.next = 1

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return 2**100 + self.next


@pytest.fixture
def ids() -> Iterator[_Counting]:
    telemetry.shutdown_otel()
    telemetry.init_otel(
        OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False, logs_enabled=False),
        frame_sink=lambda frame: None,
    )
    counting = _Counting()
    telemetry.runtime().handler_spans._ids = counting
    yield counting
    telemetry.shutdown_otel()


def _general(name: str, traceparent: str | None, bag: str | None) -> tuple[Any, Any]:
    parent = telemetry.extract_context(traceparent, bag)
    span = telemetry.start_handler_span(telemetry.get_tracer(), name, parent)
    return span, trace.set_span_in_context(span, parent)


def _view(span: Any, ctx: Any) -> tuple[object, ...]:
    exported = b""
    if span.is_recording():
        span.set_status(trace.StatusCode.OK)
        span.start_time = 1
        span.end_time = 2
        exported = serialize_spans([span])
    items = [(key, "<span>" if value is span else value) for key, value in ctx.items()]
    return type(span), span.get_span_context(), exported, items, dict(baggage.get_all(ctx))


@pytest.mark.parametrize(("traceparent", "bag"), HEADERS)
def test_same_span_and_context_as_the_general_path(ids: _Counting, traceparent: str | None, bag: str | None) -> None:
    fast = telemetry.start_handler(telemetry.get_tracer(), "call f", traceparent, bag)
    api = telemetry._w3c()
    assert api is not None
    if api.extract(traceparent, bag) is None:
        assert fast is None  # only the general path knows what to make of these headers
        return
    assert fast is not None
    ids.next = 1
    assert _view(*fast) == _view(*_general("call f", traceparent, bag))


def test_none_where_the_general_path_must_decide(ids: _Counting) -> None:
    tracer = telemetry.get_tracer()
    tp = f"00-{TRACE}-00f067aa0ba902b7-01"
    assert telemetry.start_handler(tracer, "call f", tp, None) is not None
    assert telemetry.start_handler(None, "call f", tp, None) is None  # telemetry off
    assert telemetry.start_handler(trace.NoOpTracer(), "call f", tp, None) is None  # not our tracer
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    try:
        assert telemetry.start_handler(tracer, "call f", tp, None) is None  # a configured propagator
    finally:
        propagate.set_global_textmap(before)
    runtime = telemetry.runtime()
    runtime.tracer_provider.add_span_processor(telemetry_processor())
    assert telemetry.start_handler(tracer, "call f", tp, None) is None  # another processor: SDK spans only


def telemetry_processor() -> Any:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return SimpleSpanProcessor(InMemorySpanExporter())
