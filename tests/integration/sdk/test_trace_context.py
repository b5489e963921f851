"""Trace context and baggage across workers, end to end over our real engine: A → B → C.

Worker A sets baggage ``k=v`` inside a span and calls B; B's handler must see the baggage and A's trace id, and
its nested call to C must carry both on. With telemetry disabled the same chain still works, and a caller's
remote context still passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context

from iii import OtelConfig, telemetry
from iii.iii import III

from .conftest import MakeWorker, RealEngineThread, workers_of

pytestmark = [pytest.mark.our_engine("runs the chain on our engine on a background loop"),
              pytest.mark.usefixtures("fresh_telemetry")]

ON = OtelConfig(enabled=True, service_name="trace-e2e", fetch_instrumentation_enabled=False,
                metrics_enabled=False, logs_enabled=False)
OFF = OtelConfig(enabled=False)
REMOTE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_TRACEPARENT = f"00-{REMOTE_TRACE_ID}-00f067aa0ba902b7-01"

Seen = dict[str, tuple[str | None, dict[str, str]]]


@pytest.fixture
def make_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    yield from workers_of(real.url)


def observed(seen: Seen) -> list[tuple[str | None, dict[str, str]]]:
    """What b's and c's handlers saw, in that order."""
    return [seen["b"], seen["c"]]


def _here() -> tuple[str | None, dict[str, str]]:
    return telemetry.current_trace_id(), telemetry.get_all_baggage()


def chain(real: RealEngineThread, make_worker: MakeWorker, otel: OtelConfig, style: str) -> tuple[III, Seen]:
    """Workers a, b, c; ``t::b`` (on b) records what it sees and calls ``t::c`` (on c), which records too."""
    a, b, c = (make_worker(name, otel=otel) for name in "abc")
    seen: Seen = {}
    if style == "sync":
        # Sync handlers run in executor threads and call back with the blocking API.
        def on_b(data: Any) -> Any:
            seen["b"] = _here()
            return b.trigger({"function_id": "t::c", "payload": {}})

        def on_c(data: Any) -> Any:
            seen["c"] = _here()
            return "c-done"

        b.register_function("t::b", on_b)
        c.register_function("t::c", on_c)
    else:
        async def on_b_async(data: Any) -> Any:
            seen["b"] = _here()
            return await b.trigger_async({"function_id": "t::c", "payload": {}})

        async def on_c_async(data: Any) -> Any:
            seen["c"] = _here()
            return "c-done"

        b.register_function("t::b", on_b_async)
        c.register_function("t::c", on_c_async)
    real.wait_registered("t::b", "t::c")
    return a, seen


@pytest.mark.parametrize("style", ["sync", "async"])
def test_trace_id_and_baggage_flow_from_a_through_b_to_c(
    real: RealEngineThread, make_worker: MakeWorker, style: str
) -> None:
    a, seen = chain(real, make_worker, ON, style)
    assert telemetry.is_initialized()
    tracer = telemetry.get_tracer()
    with tracer.start_as_current_span("a-root"):
        token = context.attach(telemetry.set_baggage_entry("k", "v"))
        try:
            a_trace = telemetry.current_trace_id()
            assert a_trace is not None
            assert a.trigger({"function_id": "t::b", "payload": {}}) == "c-done"
        finally:
            context.detach(token)
    assert seen["b"] == (a_trace, {"k": "v"})
    assert seen["c"] == (a_trace, {"k": "v"})


async def test_trigger_async_from_a_foreign_loop_carries_the_callers_context(
    real: RealEngineThread, make_worker: MakeWorker
) -> None:
    import asyncio

    a, seen = await asyncio.to_thread(chain, real, make_worker, ON, "async")
    token = context.attach(telemetry.extract_context(REMOTE_TRACEPARENT, "k=from-foreign-loop"))
    try:
        assert await a.trigger_async({"function_id": "t::b", "payload": {}}) == "c-done"
    finally:
        context.detach(token)
    assert observed(seen) == [(REMOTE_TRACE_ID, {"k": "from-foreign-loop"})] * 2


@pytest.mark.parametrize("style", ["sync", "async"])
def test_with_telemetry_disabled_calls_work_and_context_passes_through(
    real: RealEngineThread, make_worker: MakeWorker, style: str
) -> None:
    a, seen = chain(real, make_worker, OFF, style)
    assert not telemetry.is_initialized() and telemetry.get_tracer() is None
    # No context at all: plain calls, nothing invented.
    assert a.trigger({"function_id": "t::b", "payload": {}}) == "c-done"
    assert observed(seen) == [(None, {}), (None, {})]
    # A caller's remote context still travels unchanged, with no spans of our own.
    token = context.attach(telemetry.extract_context(REMOTE_TRACEPARENT, "k=v"))
    try:
        assert a.trigger({"function_id": "t::b", "payload": {}}) == "c-done"
    finally:
        context.detach(token)
    assert observed(seen) == [(REMOTE_TRACE_ID, {"k": "v"})] * 2
