"""TraceScope: what a handler sees of its caller's trace context, with telemetry on, off and absent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from iii import OtelConfig, telemetry
from iii.trace_scope import TraceScope

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


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
