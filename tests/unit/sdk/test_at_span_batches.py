"""Attack A-T: a span no OTLP-JSON text can be written for (a NaN attribute, a lone surrogate, a name that is no
string) is dropped from its batch's frame alone, counted and logged; the other spans of the batch are sent."""

from __future__ import annotations

import json
import logging
import tracemalloc
from typing import Any

import pytest
from opentelemetry import trace

from iii import telemetry
from iii.telemetry_exporters import serialize_spans
from iii.trace_scope import TraceScope


async def _plain() -> None:
    return None


async def _nan() -> None:
    trace.get_current_span().set_attribute("ratio", float("nan"))


async def _surrogate() -> None:
    trace.get_current_span().set_attribute("text", "\ud800")


async def _object_name() -> None:
    trace.get_current_span().update_name(object())  # type: ignore[arg-type]


async def _sdk_span_with_nan() -> None:
    with telemetry.get_tracer().start_as_current_span("inner") as inner:
        inner.set_attribute("ratio", float("inf"))


def _names(frames: list[bytes]) -> list[str]:
    return [span["name"] for frame in frames if frame.startswith(b"OTLP")
            for rs in json.loads(frame[4:])["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


async def test_one_unwritable_span_does_not_take_its_batch_down(frames: list[bytes],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    scope = TraceScope(telemetry)
    calls: list[tuple[str, Any]] = [("call a", _plain), ("call nan", _nan), ("call b", _plain),
                                    ("call sur", _surrogate), ("call obj", _object_name), ("call c", _plain),
                                    ("call sdk", _sdk_span_with_nan)]
    for name, call in calls:
        await scope.run(name, call, None, None)
    with caplog.at_level(logging.ERROR, logger="iii.telemetry_exporters"):
        assert telemetry.force_flush()
    assert sorted(_names(frames)) == ["call a", "call b", "call c", "call sdk"]
    exporter = telemetry.runtime().tracer_provider.own_processor._batch_processor._exporter
    assert exporter.unwritable == 4  # nan, surrogate, object name, the SDK span's inf
    assert "span(s), dropped: no OTLP-JSON text" in caplog.text  # (the batch timer may have split the spans)


async def test_a_long_span_text_waits_as_its_span_and_is_sent_the_same(frames: list[bytes]) -> None:
    shared = "\x01" * 100_000  # one string on every span; 6 characters each in JSON
    ended: list[Any] = []

    async def big() -> None:
        span = trace.get_current_span()
        span.set_attribute("payload", shared)
        ended.append(span)

    batch = telemetry.runtime().tracer_provider.own_processor._batch_processor
    scope = TraceScope(telemetry)
    await scope.run("call warm", _plain, None, None)
    telemetry.force_flush()
    frames.clear()
    with batch._export_lock:  # nothing leaves the queue while it is measured
        tracemalloc.start()
        try:
            for _ in range(20):
                await scope.run("call big", big, None, None)
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert held < 20 * 100_000  # as texts: 20 x 600 kB
    telemetry.force_flush()
    start = 0
    for body in [frame[4:] for frame in frames if frame.startswith(b"OTLP")]:  # the batch timer may split them
        count = len(json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"])
        assert body == serialize_spans(ended[start:start + count])
        start += count
    assert start == 20


async def test_a_batch_over_the_frame_limit_is_split_and_a_span_over_it_dropped(
        frames: list[bytes], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    exporter = telemetry.runtime().tracer_provider.own_processor._batch_processor._exporter
    monkeypatch.setattr(exporter, "max_frame_bytes", 4000)

    def sized(n: int) -> Any:
        async def handler() -> None:
            trace.get_current_span().set_attribute("payload", "p" * n)
        return handler

    scope = TraceScope(telemetry)
    sizes = [10, 900, 5000, 1500, 10, 10, 2500, 700, 10]  # 5000: alone over the limit
    for i, size in enumerate(sizes):
        await scope.run(f"call {i}", sized(size), None, None)
    with caplog.at_level(logging.ERROR, logger="iii.telemetry_exporters"):
        assert telemetry.force_flush()
    bodies = [frame for frame in frames if frame.startswith(b"OTLP")]
    assert all(len(frame) <= 4000 for frame in bodies)
    assert _names(frames) == [f"call {i}" for i, size in enumerate(sizes) if size != 5000]
    assert exporter.oversized == 1
    assert "over the 4000-byte frame limit" in caplog.text
