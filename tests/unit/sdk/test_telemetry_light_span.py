"""The handler span made by ``iii.light_span`` exports exactly the frame the OpenTelemetry SDK's span would, and is
used only when that holds (our provider, our processor only, default sampler)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import OtelConfig, telemetry
from iii.light_span import LightSpan
from iii.trace_scope import TraceScope

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
NOT_SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"


class _Oops(RuntimeError):
    pass


async def _busy() -> dict[str, Any]:
    span = trace.get_current_span()
    span.set_attribute("user.id", 7)
    span.set_attributes({"tags": ["a", "b"], "bad": object()})  # type: ignore[dict-item]  # dropped, like the SDK
    span.add_event("step", {"n": 1}, timestamp=5)
    span.add_link(trace.SpanContext(int(TRACE_ID, 16), 0x1234, is_remote=True), {"why": "batch"})
    span.update_name("call renamed")
    return {"type": type(span).__name__, "span_id": f"{span.get_span_context().span_id:016x}"}


async def _fails() -> None:
    raise _Oops("no luck")


async def _ok_then_error() -> None:
    span = trace.get_current_span()
    span.set_status(trace.StatusCode.OK)
    span.set_status(trace.StatusCode.ERROR, "ignored: OK is final")


SCENARIOS = [("busy", _busy, SAMPLED, None), ("fails", _fails, SAMPLED, "k=v"), ("root", _busy, None, None),
             ("unsampled", _busy, NOT_SAMPLED, None), ("final-ok", _ok_then_error, SAMPLED, None)]


def _normalised(frames: list[bytes]) -> list[dict[str, Any]]:
    telemetry.force_flush()
    out = []
    for frame in frames:
        if not frame.startswith(b"OTLP"):
            continue
        for rs in json.loads(frame[4:])["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    span = dict(span, spanId="S", startTimeUnixNano="T", endTimeUnixNano="T")
                    if span["traceId"] != TRACE_ID:
                        span["traceId"] = "NEW"
                    for event in span["events"]:
                        if event["name"] == "exception":
                            event["timeUnixNano"] = "T"
                    out.append({"resource": rs["resource"], "scope": ss["scope"], "span": span})
    frames.clear()
    return out


async def _run_all(scope: TraceScope) -> list[Any]:
    seen = []
    for _, call, traceparent, bag in SCENARIOS:
        result, error, _, response = await scope.run("call f", call, traceparent, bag)
        seen.append((result["type"] if isinstance(result, dict) else result, type(error).__name__,
                     response and re.sub(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-", "00-T-S-", response)))
    return seen


async def test_same_frames_as_the_sdk_span(frames: list[bytes]) -> None:
    scope = TraceScope(telemetry)
    light_seen = await _run_all(scope)
    light = _normalised(frames)
    runtime = telemetry.runtime()
    spans, runtime.handler_spans = runtime.handler_spans, None  # the SDK's tracer for every span
    try:
        sdk_seen = await _run_all(scope)
    finally:
        runtime.handler_spans = spans
    sdk = _normalised(frames)
    assert [kind for kind, _, _ in light_seen] == ["LightSpan", None, "LightSpan", "NonRecordingSpan", None]
    assert [kind for kind, _, _ in sdk_seen] == ["_Span", None, "_Span", "NonRecordingSpan", None]
    assert [rest for _, *rest in light_seen] == [rest for _, *rest in sdk_seen]
    assert len(light) == 4  # the unsampled call exports nothing
    for ours, theirs in zip(light, sdk, strict=True):
        exception = [e for e in ours["span"]["events"] if e["name"] == "exception"]
        if exception:  # the stack trace names the frames it passed: the same code path, same text but line numbers
            for event in (exception[0], next(e for e in theirs["span"]["events"] if e["name"] == "exception")):
                for attribute in event["attributes"]:
                    if attribute["key"] == "exception.stacktrace":
                        attribute["value"]["stringValue"] = re.sub(r"line \d+", "line N",
                                                                   attribute["value"]["stringValue"])
        assert ours == theirs


async def test_the_span_ids_the_handler_sees_are_exported(frames: list[bytes]) -> None:
    result, _, _, response = await TraceScope(telemetry).run("call f", _busy, SAMPLED, None)
    telemetry.force_flush()
    [span] = [s for f in frames if f.startswith(b"OTLP") for rs in json.loads(f[4:])["resourceSpans"]
              for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert result["type"] == "LightSpan"
    assert span["spanId"] == result["span_id"] and response == f"00-{TRACE_ID}-{result['span_id']}-01"
    assert span["parentSpanId"] == "00f067aa0ba902b7" and span["kind"] == 2


async def test_a_users_span_processor_sees_sdk_spans(frames: list[bytes]) -> None:
    exporter = InMemorySpanExporter()
    telemetry.runtime().tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    result, _, _, _ = await TraceScope(telemetry).run("call f", _busy, SAMPLED, None)
    assert result["type"] == "_Span"  # the light span is off: every processor gets the SDK's spans
    assert [span.name for span in exporter.get_finished_spans()] == ["call renamed"]


async def test_a_configured_sampler_keeps_the_sdk_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False,
                                   logs_enabled=False), frame_sink=lambda frame: None)
    try:
        result, _, _, _ = await TraceScope(telemetry).run("call f", _busy, SAMPLED, None)
        assert result["type"] == "_Span"
    finally:
        telemetry.shutdown_otel()


def test_light_span_rules_after_end() -> None:
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False,
                                   logs_enabled=False), frame_sink=lambda frame: None)
    try:
        span = telemetry.start_handler_span(telemetry.get_tracer(), "call f", None)
        assert isinstance(span, LightSpan) and span.is_recording()
        span.end()
        span.set_attribute("late", 1)
        span.set_status(trace.StatusCode.ERROR)
        span.end()  # warned, not exported twice
        assert not span.is_recording() and dict(span.attributes) == {}
        assert span.status.status_code is trace.StatusCode.UNSET
    finally:
        telemetry.shutdown_otel()
