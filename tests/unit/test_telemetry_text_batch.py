"""A batch of span texts only (every handler span's, issue 10) is written without a Python-level pass over its items,
to the same bytes as the spans themselves; a batch mixing texts and spans still goes item by item."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from iii import telemetry_exporters
from iii.telemetry_exporters import serialize_spans, span_text


def _spans(count: int) -> list[object]:
    provider = TracerProvider(resource=Resource.create({"service.name": "texts"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("iii-python-sdk")
    for index in range(count):
        tracer.start_span(f"call f{index % 2}").end()
    spans: list[object] = list(exporter.get_finished_spans())
    provider.shutdown()
    return spans


def _refuse(*args: object) -> object:
    raise AssertionError("an item of an all-text batch looked at in Python")


def test_all_text_batch_takes_no_pass_over_its_items(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = _spans(5)
    source = (spans[0].resource, spans[0].instrumentation_scope)  # type: ignore[attr-defined]
    expected = serialize_spans(spans)
    texts = [span_text(span) for span in spans]
    monkeypatch.setattr(telemetry_exporters, "_one_source", _refuse)
    monkeypatch.setattr(telemetry_exporters, "span_text", _refuse)
    assert serialize_spans(texts, source) == expected


def test_mixed_batch_and_other_sources_are_written_item_by_item() -> None:
    spans = _spans(4)
    resource, scope = spans[0].resource, spans[0].instrumentation_scope  # type: ignore[attr-defined]
    expected = serialize_spans(spans)
    mixed = [span_text(spans[0]), spans[1], span_text(spans[2]), spans[3]]
    assert serialize_spans(mixed, (resource, scope)) == expected
    # texts told of another scope than the spans': two scopes in the document, as for the spans themselves
    other = InstrumentationScope("other")
    document = serialize_spans([span_text(spans[0]), spans[1]], (resource, other)).decode()
    assert document.count('"scope":') == 2 and '"name":"other"' in document
    with pytest.raises(TypeError):
        serialize_spans([span_text(spans[0])], None)  # a text with no source told
