"""TraceScope: what a handler sees of its caller's trace context, with telemetry on, off and absent; the trace
headers and the handler span of its fast paths match what the generic OpenTelemetry paths produce."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from iii import OtelConfig, telemetry
from iii.trace_scope import TraceScope

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def otel_on() -> Iterator[list[bytes]]:
    frames: list[bytes] = []
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False,
                                   logs_enabled=False), frame_sink=frames.append)
    yield frames
    telemetry.shutdown_otel()


async def _seen() -> tuple[str | None, dict[str, str], str | None]:
    return telemetry.current_trace_id(), telemetry.get_all_baggage(), telemetry.current_span_id()


async def test_span_keeps_the_callers_baggage_and_trace(otel_on: list[bytes]) -> None:
    (trace_id, baggage, span_id), error, _, response = await TraceScope(telemetry).run(
        "call f", _seen, TRACEPARENT, "k=v,team=core")
    assert error is None
    assert (trace_id, baggage) == (TRACE_ID, {"k": "v", "team": "core"})
    assert span_id != "00f067aa0ba902b7"  # a span of our own, child of the caller's
    assert response is not None and response.split("-")[1:3] == [TRACE_ID, span_id]
    assert telemetry.get_all_baggage() == {}  # detached again afterwards


async def test_handler_error_is_captured_inside_the_span(otel_on: list[bytes]) -> None:
    async def boom() -> Any:
        raise KeyError("missing")

    result, error, stack, response = await TraceScope(telemetry).run("call f", boom, TRACEPARENT, None)
    assert result is None and isinstance(error, KeyError)
    assert stack is not None and "KeyError: 'missing'" in stack
    assert response is not None and TRACE_ID in response


async def test_telemetry_off_still_passes_the_context_through() -> None:
    telemetry.shutdown_otel()
    assert telemetry.get_tracer() is None
    (trace_id, baggage, span_id), error, _, response = await TraceScope(telemetry).run(
        "call f", _seen, TRACEPARENT, "k=v")
    assert (trace_id, baggage, span_id, error, response) == (TRACE_ID, {"k": "v"}, "00f067aa0ba902b7", None, None)


async def test_without_the_telemetry_module_the_handler_just_runs() -> None:
    outcome = await TraceScope(None).run("call f", _seen, TRACEPARENT, "k=v")
    assert outcome == ((None, {}, None), None, None, None)
    assert TraceScope(None).headers() == (None, None)


def _generic() -> tuple[str | None, str | None]:
    return telemetry.inject_traceparent(), telemetry.inject_baggage()


def test_trace_headers_match_the_propagators(otel_on: list[bytes]) -> None:
    assert telemetry.trace_headers() == _generic() == (None, None)
    token = context.attach(baggage.set_baggage("team", "core a", baggage.set_baggage("k", "v=1")))
    try:
        assert telemetry.trace_headers() == _generic() == (None, "k=v%3D1,team=core+a")
        with telemetry.get_tracer().start_as_current_span("caller") as span:
            headers = telemetry.trace_headers()
            assert headers == _generic()
            assert headers[0] == telemetry.span_traceparent(span)
            assert headers[0] is not None and headers[0].split("-")[2] == f"{span.get_span_context().span_id:016x}"
    finally:
        context.detach(token)
    remote = telemetry.extract_context(TRACEPARENT, None)  # sampled flag and ids of a remote parent
    token = context.attach(remote)
    try:
        assert telemetry.trace_headers() == _generic() == (TRACEPARENT, None)
    finally:
        context.detach(token)


def test_a_configured_propagator_is_still_used(otel_on: list[bytes]) -> None:
    # Only trace context, no baggage: the generic path decides, so baggage does not travel.
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    token = context.attach(baggage.set_baggage("k", "v"))
    try:
        with telemetry.get_tracer().start_as_current_span("caller"):
            tp, bg = telemetry.trace_headers()
            assert (tp, bg) == _generic() and tp is not None and bg is None
    finally:
        context.detach(token)
        propagate.set_global_textmap(before)


def _spans(frames: list[bytes]) -> list[dict[str, Any]]:
    telemetry.force_flush()
    return [span for frame in frames if frame.startswith(b"OTLP")
            for rs in json.loads(frame[4:])["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


async def test_handler_spans_keep_name_kind_parent_status_and_events(otel_on: list[bytes]) -> None:
    async def ok() -> int:
        return 1

    async def boom() -> int:
        raise ValueError("bad input")

    scope = TraceScope(telemetry)
    _, _, _, ok_response = await scope.run("call f", ok, TRACEPARENT, None)
    _, error, _, boom_response = await scope.run("call g", boom, TRACEPARENT, "k=v")
    assert isinstance(error, ValueError)
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached
    spans = {span["name"]: span for span in _spans(otel_on)}
    assert set(spans) == {"call f", "call g"}
    for name, response in (("call f", ok_response), ("call g", boom_response)):
        span = spans[name]
        assert (span["traceId"], span["parentSpanId"], span["kind"]) == (TRACE_ID, CALLER_SPAN, 2)  # OTLP SERVER
        assert response == f"00-{TRACE_ID}-{span['spanId']}-01"
        assert span["endTimeUnixNano"] >= span["startTimeUnixNano"]
    assert spans["call f"]["status"]["code"] == 1
    assert spans["call g"]["status"] == {"code": 2, "message": "bad input"}
    assert [event["name"] for event in spans["call g"]["events"]] == ["exception"]
    assert "events" not in spans["call f"] or spans["call f"]["events"] == []
