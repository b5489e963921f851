"""The fast ``traceparent`` text of ``iii.telemetry`` is exactly what OpenTelemetry's W3C propagator writes, for
edge ids and every flag byte (a guard for the %-formatting that replaced the f-string)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from iii import telemetry


def test_fast_traceparent_matches_the_propagator() -> None:
    propagator = TraceContextTextMapPropagator()
    for trace_id in (1, 0x4BF92F3577B34DA6A3CE929D0E0E4736, 2**128 - 1):
        for span_id in (1, 0x00F067AA0BA902B7, 2**64 - 1):
            for flags in (0, 1, 2, 3, 0x7F, 0xFF):
                context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
                span = NonRecordingSpan(context)
                carrier: dict[str, str] = {}
                propagator.inject(carrier, trace.set_span_in_context(span))
                assert telemetry.span_traceparent(span) == carrier["traceparent"]


def test_no_traceparent_for_the_invalid_context() -> None:
    assert telemetry.span_traceparent(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)) is None
