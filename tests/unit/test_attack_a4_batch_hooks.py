"""Attack A4 on 7346dfa: a LightSpan skips BatchSpanProcessor.on_start/on_end only while they are the functions that
were checked at import. A hook replaced afterwards (a test's ``mock.patch.object`` on the processor, an agent that
wraps the class's method after the SDK was imported) must be called again, as it is for an SDK span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import light_span


@pytest.fixture
def setup() -> Iterator[tuple[light_span.OwnTracerProvider, BatchSpanProcessor, InMemorySpanExporter]]:
    provider = light_span.OwnTracerProvider()
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield provider, processor, exporter
    provider.shutdown()


def _end_one(provider: light_span.OwnTracerProvider, spans: light_span.HandlerSpans) -> None:
    span = spans.start("call f", None)
    assert isinstance(span, light_span.LightSpan)
    span.end()
    provider.force_flush()


@pytest.mark.parametrize("hook", ["on_start", "on_end"])
def test_hooks_patched_on_the_processor_are_called(hook: str, setup: Any) -> None:
    provider, processor, exporter = setup
    spans = light_span.HandlerSpans(provider, "demo")
    _end_one(provider, spans)  # a span before the patch: the shortcut was taken (and remembered) for this processor
    with mock.patch.object(processor, hook, wraps=getattr(processor, hook)) as spy:
        _end_one(provider, spans)
    assert spy.call_count == 1
    _end_one(provider, spans)  # the patch is gone: the shortcut again
    assert spy.call_count == 1
    assert [s.name for s in exporter.get_finished_spans()] == ["call f"] * 3


@pytest.mark.parametrize("hook", ["on_start", "on_end"])
def test_hooks_replaced_on_the_class_after_import_are_called(hook: str, setup: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _processor, exporter = setup
    spans = light_span.HandlerSpans(provider, "demo")
    _end_one(provider, spans)
    calls: list[Any] = []
    original = getattr(BatchSpanProcessor, hook)

    def wrapped(self: BatchSpanProcessor, span: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(span)
        original(self, span, *args, **kwargs)

    monkeypatch.setattr(BatchSpanProcessor, hook, wrapped)
    _end_one(provider, spans)
    assert len(calls) == 1
    assert [s.name for s in exporter.get_finished_spans()] == ["call f"] * 2
