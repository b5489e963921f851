"""The callee's handler span ends after the invocation's answer was sent: the caller never waits for the span's
end and export (issue 10), while the span keeps its name, kind, parent, status and response ``traceparent``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from iii import OtelConfig, telemetry

from .conftest import MakeWorker, RealEngineThread, workers_of

pytestmark = pytest.mark.our_engine("calls between two workers of this process on our engine")

ON = OtelConfig(enabled=True, service_name="span-after-answer", fetch_instrumentation_enabled=False,
                metrics_enabled=False, logs_enabled=False)


@pytest.fixture
def make_worker() -> Iterator[MakeWorker]:
    telemetry.shutdown_otel()  # process-wide: start from "not initialised"
    with RealEngineThread() as real:
        yield from workers_of(real.url)
    telemetry.shutdown_otel()


class _AtEnd(SpanProcessor):
    """At the end of the handler span: did the caller already have its answer? (waits up to 3 s for it)."""

    def __init__(self, answered: threading.Event) -> None:
        self.answered = answered
        self.ended: list[tuple[ReadableSpan, bool]] = []
        self.done = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "call t::echo":
            # Blocks the callee's loop: only an answer sent before the span's end can reach the caller now.
            self.ended.append((span, self.answered.wait(3)))
            self.done.set()


def test_the_answer_leaves_before_the_span_ends(make_worker: MakeWorker) -> None:
    callee = make_worker("callee", otel=ON)
    caller = make_worker("caller", otel=ON)
    answered = threading.Event()
    processor = _AtEnd(answered)
    telemetry.runtime().tracer_provider.add_span_processor(processor)
    seen: list[Any] = []

    async def echo(data: Any) -> Any:
        seen.append(trace.get_current_span().get_span_context())
        return data["x"]

    callee.register_function("t::echo", echo)
    callee.list_functions()
    tracer = telemetry.get_tracer()
    with tracer.start_as_current_span("outer") as outer:
        assert caller.trigger({"function_id": "t::echo", "payload": {"x": 1}}) == 1
        answered.set()
    assert processor.done.wait(10), "the handler span never ended"
    [(span, answer_was_out)] = processor.ended
    assert answer_was_out, "the span ended before the answer was sent"
    # The span itself is unchanged: SERVER, child of the caller's span, OK, and the one the handler saw.
    assert span.kind is trace.SpanKind.SERVER
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert span.context.trace_id == outer.get_span_context().trace_id
    assert span.status.status_code is trace.StatusCode.OK
    assert seen == [span.context]
    assert span.end_time is not None and span.start_time is not None and span.end_time >= span.start_time
