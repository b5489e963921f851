"""Issue 10: a handler span's export text writes its parent's span id from the digits the caller sent
(``LightSpan._parent_hex``), and from the parent's own id once another parent was set on the span."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from iii.light_span import HandlerSpans, OwnTracerProvider, light_text
from iii.telemetry_exporters import span_text

_CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _begun() -> HandlerSpans:
    provider = OwnTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return HandlerSpans(provider, "parent-hex")


@pytest.mark.timeout(30)
def test_the_callers_digits_are_the_parent_ids_text() -> None:
    span = _begun().begin("call f", _CALLER)
    assert span is not None and span.parent is not None
    assert span._parent_hex == (span.parent, "00f067aa0ba902b7")
    span.end_time = time.time_ns()
    text = light_text(span)
    assert text == span_text(span)
    assert text.endswith(',"parentSpanId":"00f067aa0ba902b7"}')


@pytest.mark.timeout(30)
def test_a_parent_set_since_is_written_from_its_own_id() -> None:
    span = _begun().begin("call f", _CALLER)
    assert span is not None
    span.parent = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xABCDEF, True, TraceFlags(1))
    span.end_time = time.time_ns()
    text = light_text(span)
    assert text == span_text(span)
    assert text.endswith(',"parentSpanId":"0000000000abcdef"}')


@pytest.mark.timeout(30)
def test_a_root_span_has_no_parent_digits() -> None:
    span = _begun().begin("call f", None)
    assert span is not None and span.parent is None and span._parent_hex is None
    span.end_time = time.time_ns()
    assert light_text(span) == span_text(span)
    assert "parentSpanId" not in light_text(span)
