"""Issue 10: an ended handler span (a LightSpan) waits for export as its OTLP-JSON text, not as a span object the
garbage collector walks, and the frames sent are byte for byte those the span objects would have made."""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import light_span, telemetry
from iii.telemetry_exporters import serialize_spans, span_text
from iii.trace_scope import TraceScope

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _batch() -> Any:
    return telemetry.runtime().tracer_provider.own_processor._batch_processor


@pytest.fixture
def queued(frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every item handed to the batch's queue, in order (spied before the first span binds the emit)."""
    items: list[Any] = []
    batch = _batch()
    emit = batch.emit

    def spy(item: Any) -> None:
        items.append(item)
        emit(item)

    monkeypatch.setattr(batch, "emit", spy)
    return items


async def _plain() -> str:
    return "ok"


async def _busy() -> None:
    span = trace.get_current_span()
    span.set_attribute("user.id", 7)
    span.add_event("step", {"n": 1}, timestamp=5)
    with telemetry.get_tracer().start_as_current_span("inner") as inner:  # an SDK span in the same batch
        inner.set_attribute("inner", True)


async def _fails() -> None:
    raise RuntimeError("no luck")


async def test_queued_handler_spans_are_texts_no_collector_tracks(queued: list[Any]) -> None:
    scope = TraceScope(telemetry)
    for _ in range(3):
        await scope.run("call f", _plain, None, None)
    assert len(queued) == 3
    assert all(type(item) is str and not gc.is_tracked(item) for item in queued)


async def test_frames_are_what_the_span_objects_make(queued: list[Any], frames: list[bytes],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    texts_of: list[Any] = []  # the LightSpans whose texts were queued, in order
    real, real_light = span_text, light_span.light_text
    inside: list[Any] = []  # light_text falls back on span_text: one span, one entry

    def keep(span: Any) -> str:
        if not inside:
            texts_of.append(span)
        return real(span)

    def keep_light(span: Any) -> str:
        texts_of.append(span)
        inside.append(span)
        try:
            return real_light(span)
        finally:
            inside.pop()

    monkeypatch.setattr(light_span, "span_text", keep)
    monkeypatch.setattr(light_span, "light_text", keep_light)
    scope = TraceScope(telemetry)
    for call, traceparent, baggage in [(_plain, None, None), (_busy, SAMPLED, "k=v"), (_fails, SAMPLED, None),
                                       (_busy, None, None), (_plain, SAMPLED, None)]:
        await scope.run("call f", call, traceparent, baggage)
    telemetry.force_flush()
    spans = [texts_of.pop(0) if type(item) is str else item for item in queued]
    assert not texts_of
    assert [type(span).__name__ for span in spans] == ["LightSpan", "ReadableSpan", "LightSpan", "LightSpan",
                                                       "ReadableSpan", "LightSpan", "LightSpan"]
    bodies = [frame[4:] for frame in frames if frame.startswith(b"OTLP")]
    assert bodies
    start = 0
    for body in bodies:  # usually one frame; the batch's timer may split them, compare each with its spans
        count = sum(len(ss["spans"]) for rs in json.loads(body)["resourceSpans"] for ss in rs["scopeSpans"])
        assert body == serialize_spans(spans[start:start + count])
        start += count
    assert start == len(spans)


async def test_an_exporter_swapped_on_the_batch_gets_span_objects(queued: list[Any]) -> None:
    scope = TraceScope(telemetry)
    await scope.run("call f", _plain, None, None)  # binds the text emit to the batch's exporter
    telemetry.force_flush()
    exporter = InMemorySpanExporter()
    _batch()._exporter = exporter
    await scope.run("call g", _plain, None, None)
    telemetry.force_flush()
    assert [type(item).__name__ for item in queued] == ["str", "LightSpan"]
    assert [span.name for span in exporter.get_finished_spans()] == ["call g"]


async def test_a_span_without_a_text_goes_as_itself_and_fails_export_as_before(
        queued: list[Any], frames: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    async def unwritable() -> None:
        trace.get_current_span().update_name(object())  # type: ignore[arg-type]  # no JSON text for it

    await TraceScope(telemetry).run("call f", unwritable, None, None)
    with caplog.at_level(logging.ERROR, logger="iii.telemetry_exporters"):
        telemetry.force_flush()
    assert [type(item).__name__ for item in queued] == ["LightSpan"]
    assert "span export failed" in caplog.text
    assert not [frame for frame in frames if frame.startswith(b"OTLP")]


def test_a_text_without_its_source_is_refused() -> None:
    with pytest.raises(TypeError, match="no text source"):
        serialize_spans(['{"traceId":"00"}'])
