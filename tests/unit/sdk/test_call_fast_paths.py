"""The per-call fast paths of the SDK give the same results as the generic ones they replace: trace headers
built without the propagators, the handler span started without context managers, and the waiter a sync
``trigger`` blocks on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from iii import OtelConfig, telemetry
from iii.errors import ShuttingDownError
from iii.pending_calls import ThreadWaiter
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


def test_thread_waiter_is_settled_from_another_thread() -> None:
    waiter = ThreadWaiter()
    threading.Thread(target=waiter.set_result, args=({"ok": 1},)).start()
    assert waiter.wait(5.0, lambda: True) == {"ok": 1}
    failing = ThreadWaiter()
    failing.set_exception(TimeoutError("late"))
    failing.set_result("ignored: already settled")
    assert failing.done()
    with pytest.raises(TimeoutError, match="late"):
        failing.wait(5.0, lambda: True)


def test_thread_waiter_never_hangs_once_its_settler_is_gone() -> None:
    with pytest.raises(ShuttingDownError):
        ThreadWaiter().wait(0.01, lambda: False)
