"""Issue 10, the callee's telemetry per handled call in one straight path (``telemetry.begin_handler``,
``HandlerSpans.begin``): the same span, context, export text and response ``traceparent`` as the path in steps, far
fewer Python-level calls per handled call, and the response ``traceparent`` of a run under another propagator."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from iii import telemetry
from iii.handler_runner import HandlerRunner
from iii.light_span import LightSpan, light_text
from iii.telemetry_exporters import span_text
from iii.trace_scope import TraceScope
from tests.unit.test_telemetry_speed_handler import HEADERS

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _in_steps(name: str, traceparent: str | None, bag: str | None) -> tuple[Any, Any, str | None]:
    """``(span, context, response traceparent)`` as the path in steps makes them."""
    started = telemetry.start_handler(telemetry.get_tracer(), name, traceparent, bag)
    if started is None:
        parent = telemetry.extract_context(traceparent, bag)
        span = telemetry.start_handler_span(telemetry.get_tracer(), name, parent)
        started = span, trace.set_span_in_context(span, parent)
    return (*started, telemetry.span_traceparent(started[0]))


def _view(span: Any, ctx: Any, response: str | None) -> tuple[object, ...]:
    text = None
    if span.is_recording():
        span.set_status(trace.StatusCode.OK)
        span.end_time = span.start_time = 5  # the clock is the only thing the two paths read differently
        text = light_text(span) if type(span) is LightSpan else span_text(span)
    items = [(key, "<span>" if value is span else value) for key, value in ctx.items()]
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)  # what the handler's nested calls carry
    return type(span), span.get_span_context(), span.parent, text, items, dict(baggage.get_all(ctx)), response, \
        carrier


@pytest.fixture
def warm(frames: list[bytes]) -> Iterator[None]:
    telemetry.start_handler(telemetry.get_tracer(), "call warm", None, None)  # makes the W3C helpers
    yield


@pytest.mark.parametrize(("traceparent", "bag"), HEADERS)
def test_one_path_makes_what_the_steps_make(warm: None, traceparent: str | None, bag: str | None) -> None:
    random.seed(10)
    begun = telemetry.begin_handler("call f", traceparent, bag)
    plain = bool(traceparent) and telemetry._w3c().remote_parent(traceparent) is not None  # type: ignore[union-attr]
    sampled = bool(traceparent) and int(traceparent[-1], 16) & 1  # the flags' last hex digit holds the sampled bit
    if traceparent and not (plain and sampled):
        assert begun is None  # not plain, or a parent not sampled: the steps decide
        return
    assert begun is not None
    assert type(begun[0]) is LightSpan
    random.seed(10)
    assert _view(*begun) == _view(*_in_steps("call f", traceparent, bag))
    own = begun[0].get_span_context()
    assert begun[2] == "00-%032x-%016x-%02x" % (own.trace_id, own.span_id, own.trace_flags)  # noqa: UP031


def test_one_path_steps_aside(warm: None) -> None:
    runtime = telemetry.runtime()
    assert telemetry.begin_handler("call f", SAMPLED, None) is not None
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    try:
        assert telemetry.begin_handler("call f", SAMPLED, None) is None  # another propagator extracts
    finally:
        propagate.set_global_textmap(before)

    class Ids(IdGenerator):
        def generate_span_id(self) -> int:
            return 7

        def generate_trace_id(self) -> int:
            return 9

    spans = runtime.handler_spans
    own = spans._ids
    spans._ids = Ids()
    try:
        # another id generator is asked by the steps, exactly as the SDK's tracer asks it
        assert telemetry.begin_handler("call f", None, None) is None
        assert telemetry.begin_handler("call f", SAMPLED, None) is None
    finally:
        spans._ids = own
    runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert telemetry.begin_handler("call f", SAMPLED, None) is None  # another processor: SDK spans only
    telemetry.shutdown_otel()
    assert telemetry.begin_handler("call f", SAMPLED, None) is None  # telemetry off


def _python_calls_per_handled_call(traceparent: str | None) -> list[str]:
    runner = HandlerRunner("ws://127.0.0.1:1")
    scope = TraceScope(telemetry)

    async def echo(data: Any) -> Any:
        return data

    runner.add("f", echo)
    called: list[str] = []

    def count(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    async def handle() -> None:
        for _ in range(2):  # warm: the helpers are made on the first call
            (_, end) = await runner.start("f", 1, traceparent, None, scope, True)
            end()
        # A collection in the window would run other objects' finalizers (a channel writer's weakref.finalize, a
        # __del__) under the profiler, counting their calls: the count then depended on the tests run before.
        collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        sys.setprofile(count)
        try:
            (outcome, end) = await runner.start("f", 1, traceparent, None, scope, True)
            end()
        finally:
            sys.setprofile(None)
            if collecting:
                gc.enable()
        assert outcome[0] == 1 and outcome[2] is not None  # answered, with the span's traceparent

    asyncio.run(handle())
    return called


@pytest.mark.parametrize("traceparent", [None, SAMPLED])
def test_a_handled_call_makes_few_python_calls(frames: list[bytes], traceparent: str | None) -> None:
    # Issue 10: the callee's telemetry CPU per handled call was mostly Python call overhead (20 calls for a run
    # without a caller's span, 27 with one, before the straight path; 11 with it).
    called = _python_calls_per_handled_call(traceparent)
    assert len(called) <= 12, called


async def test_the_response_names_the_span_under_another_propagator(frames: list[bytes]) -> None:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(TraceContextTextMapPropagator())  # as OTEL_PROPAGATORS=tracecontext sets it
    try:
        async def inside() -> str | None:
            return telemetry.inject_traceparent()

        scope = TraceScope(telemetry)
        (result, error, _, response), end = await scope.start("call f", inside, SAMPLED, None)
        end()
    finally:
        propagate.set_global_textmap(before)
    assert error is None and result is not None and result.startswith(SAMPLED[:36])
    assert response == result  # what the handler's nested calls carried: its own span (it was None)


def test_outgoing_headers_of_the_current_context(frames: list[bytes]) -> None:
    scope = TraceScope(telemetry)
    assert scope.headers() == (None, None)
    ctx = baggage.set_baggage("k", "v", telemetry.extract_context(SAMPLED, None))
    token = context.attach(ctx)
    try:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        assert scope.headers() == (carrier["traceparent"], carrier["baggage"]) == (SAMPLED, "k=v")
    finally:
        context.detach(token)
    assert scope.headers() == (None, None)
