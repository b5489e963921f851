"""HandlerSpans.begin hands a handler span straight to the batch only while the processor's hooks are still the
known ones, however the span starts (issue 10: the straight path is inline in begin)."""

from __future__ import annotations

from unittest import mock

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import light_span


@pytest.mark.parametrize("traceparent", [None, "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"])
def test_begun_spans_see_a_hook_patched_on_the_processor_later(traceparent: str | None) -> None:
    """A hook patched on the processor after spans went the straight way sees every span begun from then on."""
    provider = light_span.OwnTracerProvider()
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    spans = light_span.HandlerSpans(provider, "demo")
    for _ in range(2):  # the first span sets the processor's hooks up, the second goes the straight way
        span = spans.begin("call f", traceparent)
        assert span is not None and span._on_end is not None
        span.end()
    seen: list[str] = []
    with mock.patch.object(processor, "on_end", side_effect=lambda s: seen.append(s.name)):
        span = spans.begin("call g", traceparent)
        assert span is not None and span._on_end is None
        span.end()
    assert seen == ["call g"]
    provider.force_flush()
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["call f", "call f"]
    assert all((s.parent is None) is (traceparent is None) for s in finished)
    provider.shutdown()


def test_begun_spans_of_another_processor_go_through_its_hooks() -> None:
    """A processor of another type than the SDK's batch (a subclass): begin never skips its on_start/on_end."""
    hooks: list[str] = []

    class Counting(BatchSpanProcessor):
        def on_start(self, span: object, parent_context: object = None) -> None:
            hooks.append("start")

        def on_end(self, span: object) -> None:
            hooks.append("end")

    provider = light_span.OwnTracerProvider()
    provider.add_span_processor(Counting(InMemorySpanExporter()))
    spans = light_span.HandlerSpans(provider, "demo")
    for _ in range(2):
        span = spans.begin("call f", None)
        assert span is not None
        span.end()
    assert hooks == ["start", "end", "start", "end"]
    provider.shutdown()
