"""Issue 10, the handler span's end: its export text written from its traceparent (``light_text``), that traceparent
written from the ids' bytes (``plain_traceparent``), the text put on the batch's queue without the SDK's
``BatchProcessor.emit`` call (its usual case inline), and the handler context set on OpenTelemetry's context
variable itself. Same texts, same headers, same queue, same drops and warnings as before."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from iii import light_span, otel_internals, telemetry, telemetry_exporters
from iii.light_span import HandlerSpans, LightSpan, OwnTracerProvider, light_text, plain_traceparent, traceparent_text
from iii.telemetry_exporters import EngineSpanExporter, SharedEngineConnection, span_text
from iii.trace_scope import TraceScope
from tests.polling import until

REMOTE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Ids(IdGenerator):
    """Hands out the ids given, in order (the SDK's tracer takes whatever its generator returns)."""

    def __init__(self, *ids: int) -> None:
        self.ids = list(ids)

    def generate_span_id(self) -> int:
        return self.ids.pop(0)

    def generate_trace_id(self) -> int:
        return self.ids.pop(0)


@pytest.mark.parametrize("trace_id", [1, 2**128 - 1, 0, 2**128, -1, 2**127 + 5])
@pytest.mark.parametrize("span_id", [1, 2**64 - 1, 0, 2**64])
@pytest.mark.parametrize("flags", [TraceFlags(0), TraceFlags(1), TraceFlags(3), TraceFlags(0xFF), 1])
def test_traceparent_text_is_the_propagators(trace_id: int, span_id: int, flags: Any) -> None:
    ctx = SpanContext(trace_id, span_id, False, flags)
    expected = "00-%032x-%016x-%02x" % (trace_id, span_id, flags)  # noqa: UP031 - what it wrote before
    assert traceparent_text(ctx) == expected
    plain = plain_traceparent(ctx)
    in_range = 0 <= trace_id < 2**128 and 0 <= span_id < 2**64 and type(flags) is TraceFlags
    assert plain == (expected if in_range else None)
    if ctx.is_valid and type(flags) is TraceFlags:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(ctx)))
        assert carrier["traceparent"] == expected


def test_an_int_subclass_id_is_not_written_from_its_bytes() -> None:
    class Odd(int):
        def to_bytes(self, *args: Any, **kwargs: Any) -> bytes:
            return b"\xff" * 16

    ctx = SpanContext(Odd(5), 6, False, TraceFlags(1))
    assert plain_traceparent(ctx) is None
    assert traceparent_text(ctx) == "00-%032x-%016x-01" % (5, 6)  # noqa: UP031


def _spans(provider: OwnTracerProvider) -> list[Any]:
    """LightSpans of every shape a handler can leave, ended, with and without their traceparent written."""
    spans = HandlerSpans(provider, "emit")
    parent = telemetry.extract_context(REMOTE, None)
    out: list[Any] = []
    for shape in range(12):
        for ctx in (None, parent):
            span = spans.start(f"call f{shape % 3}", ctx, SpanKind.SERVER if shape % 4 else SpanKind.CLIENT)
            assert isinstance(span, LightSpan)
            if shape == 1:
                span.set_status(Status(StatusCode.OK))
            elif shape == 2:
                span.set_status(StatusCode.ERROR, 'why "not"\n\u00e9')
            elif shape == 3:
                span.set_attribute("k", "v")
            elif shape == 4:
                span.add_event("step", {"n": 1}, timestamp=5)
            elif shape == 5:
                span.update_name('call "\u2603"')
            elif shape == 6:
                span.update_name(7)  # type: ignore[arg-type]  # no str: the dict path decides
            elif shape == 7:
                span.parent = SpanContext(1, 2**64, False)  # a parent id out of range
            elif shape == 8:
                span.parent = None
            if shape % 2:
                span._traceparent = plain_traceparent(span.get_span_context())
            span.end_time = 1.5 if shape == 9 else time.time_ns()  # type: ignore[assignment]
            out.append(span)
    return out


def _text_or_error(write: Any, span: Any) -> Any:
    try:
        return write(span)
    except Exception as exc:
        return type(exc)


def test_light_text_is_span_text_for_every_shape() -> None:
    provider = OwnTracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EngineSpanExporter(SharedEngineConnection(lambda frame: None))))  # type: ignore[arg-type]
    spans = _spans(provider)
    for cold in (True, False):  # the cached pieces empty, then filled
        if cold:
            telemetry_exporters._heads.clear()
            telemetry_exporters._tails.clear()
            light_span._LIGHT_PIECES.clear()
        for span in spans:
            assert _text_or_error(light_text, span) == _text_or_error(span_text, span)
    provider.shutdown()


def test_the_light_pieces_are_bounded() -> None:
    provider = OwnTracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EngineSpanExporter(SharedEngineConnection(lambda frame: None))))  # type: ignore[arg-type]
    spans = HandlerSpans(provider, "emit")
    for n in range(light_span._LIGHT_PIECES_MAX + 10):
        span = spans.start(f"call f{n}", None)
        span._traceparent = plain_traceparent(span.get_span_context())  # type: ignore[attr-defined]
        span.end_time = time.time_ns()  # type: ignore[attr-defined]
        for _ in range(2):
            assert light_text(span) == span_text(span)  # type: ignore[arg-type]
        assert len(light_span._LIGHT_PIECES) <= light_span._LIGHT_PIECES_MAX
    provider.shutdown()


def _root_ids(provider: OwnTracerProvider) -> tuple[int, int]:
    span = HandlerSpans(provider, "emit").start("call f", None)
    context = span.get_span_context()
    assert context.is_valid and context.trace_flags == TraceFlags(3)  # sampled, random trace id
    return context.trace_id, context.span_id


def test_root_ids_are_the_generators_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    provider = OwnTracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EngineSpanExporter(SharedEngineConnection(lambda frame: None))))  # type: ignore[arg-type]
    random.seed(7)
    drawn = _root_ids(provider)
    random.seed(7)
    generator = RandomIdGenerator()
    assert drawn == (generator.generate_trace_id(), generator.generate_span_id())
    zeros = iter([0, 0, 5, 0, 6])  # a zero draw is drawn again, as the generator does
    monkeypatch.setattr(random, "getrandbits", lambda bits: next(zeros))
    assert _root_ids(provider) == (5, 6)
    monkeypatch.undo()
    monkeypatch.setattr(RandomIdGenerator, "generate_span_id", lambda self: 99)  # patched later: called again
    assert _root_ids(provider)[1] == 99
    monkeypatch.undo()
    monkeypatch.setattr(provider.id_generator, "generate_trace_id", lambda: 42)  # on the instance too
    assert _root_ids(provider)[0] == 42
    provider.shutdown()


def test_the_id_generator_of_the_installed_sdk_is_the_known_one() -> None:
    assert light_span._RANDOM_KNOWN


def test_light_text_of_ids_the_bytes_cannot_write() -> None:
    provider = OwnTracerProvider(id_generator=_Ids(2**128 + 1, 7, 5, 2**64 + 3))
    provider.add_span_processor(BatchSpanProcessor(EngineSpanExporter(SharedEngineConnection(lambda frame: None))))  # type: ignore[arg-type]
    spans = HandlerSpans(provider, "emit")
    for _ in range(2):
        span = spans.start("call f", None)
        span._traceparent = plain_traceparent(span.get_span_context())  # type: ignore[attr-defined]
        assert span._traceparent is None  # type: ignore[attr-defined]
        span.end_time = time.time_ns()  # type: ignore[attr-defined]
        assert light_text(span) == span_text(span)  # type: ignore[arg-type]
    provider.shutdown()


async def test_response_traceparent_and_frames_of_handler_runs(frames: list[bytes]) -> None:
    scope = TraceScope(telemetry)
    seen = []

    async def handler() -> str:
        span = trace.get_current_span()
        seen.append(span)
        return "ok"

    for traceparent in (None, REMOTE):
        result, error, _, response = await scope.run("call f", handler, traceparent, None)
        assert (result, error) == ("ok", None)
        span = seen[-1]
        assert type(span) is LightSpan
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
        assert response == carrier["traceparent"] == span._traceparent
    telemetry.force_flush()
    body = b"".join(frame[4:] for frame in frames_of(frames))
    assert body == telemetry_exporters.serialize_spans(seen, None)


def frames_of(sink: list[bytes]) -> list[bytes]:
    return [frame for frame in sink if frame.startswith(b"OTLP")]


def _batch() -> Any:
    return telemetry.runtime().tracer_provider.own_processor._batch_processor


async def test_the_usual_emit_needs_no_getpid(frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.getpid

    def getpid() -> int:
        calls.append(1)
        return real()

    monkeypatch.setattr(os, "getpid", getpid)
    scope = TraceScope(telemetry)
    for _ in range(5):
        await scope.run("call f", _ok, None, None)
    assert not calls  # BatchProcessor.emit asks for the process id per span: a system call
    assert len(_batch()._queue) == 5
    assert all(type(item) is str for item in _batch()._queue)


async def _ok() -> str:
    return "ok"


async def test_a_full_queue_drops_and_warns_as_the_sdks_emit(frames: list[bytes], caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _batch()
    monkeypatch.setattr(batch, "_max_export_batch_size", 10**6)  # the worker is never woken: the queue fills
    scope = TraceScope(telemetry)
    with caplog.at_level(logging.WARNING):
        for _ in range(batch._max_queue_size + 3):
            await scope.run("call f", _ok, None, None)
    assert len(batch._queue) == batch._max_queue_size
    assert "Queue full, dropping Span." in caplog.text


async def test_a_full_batch_wakes_the_worker(frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _batch()
    monkeypatch.setattr(batch, "_max_export_batch_size", 3)
    monkeypatch.setattr(batch, "_schedule_delay", 3600)  # only a wake-up makes the worker export before the test ends
    batch._worker_awaken.set()  # the worker sleeps again with the delay above
    await until(lambda: not batch._worker_awaken.is_set())
    scope = TraceScope(telemetry)
    for _ in range(2):
        await scope.run("call f", _ok, None, None)
    assert not batch._worker_awaken.is_set() and len(batch._queue) == 2
    await scope.run("call f", _ok, None, None)
    await until(lambda: len(b"".join(frames_of(frames)).split(b'"spanId"')) == 4)  # the three spans, exported
    assert not batch._queue


async def test_after_shutdown_and_in_another_process_the_sdks_emit_decides(frames: list[bytes],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.getpid

    def getpid() -> int:
        calls.append(1)
        return real()

    monkeypatch.setattr(os, "getpid", getpid)
    scope = TraceScope(telemetry)
    otel_internals._PID[0] = -1  # as if forked: the SDK's emit compares the process ids itself
    try:
        await scope.run("call f", _ok, None, None)
    finally:
        otel_internals._PID[0] = real()
    assert calls and len(_batch()._queue) == 1
    monkeypatch.setattr(_batch(), "_shutdown", True)
    await scope.run("call f", _ok, None, None)
    assert len(_batch()._queue) == 1  # ignored, as the SDK's emit ignores spans after shutdown


def test_the_emit_of_the_installed_sdk_is_the_known_one() -> None:
    # The day an SDK upgrade changes BatchProcessor.emit, this fails and the texts go through emit itself again.
    assert otel_internals._EMIT_KNOWN


async def test_handler_context_on_another_runtime_context(frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = context._RUNTIME_CONTEXT
    used: list[str] = []

    class Counting(type(runtime)):  # type: ignore[misc]
        def attach(self, ctx: Any) -> Any:
            used.append("attach")
            return runtime.attach(ctx)

        def detach(self, token: Any) -> None:
            used.append("detach")
            runtime.detach(token)

        def get_current(self) -> Any:
            return runtime.get_current()

    seen = []

    async def handler() -> None:
        seen.append(trace.get_current_span())

    scope = TraceScope(telemetry)
    await scope.run("call f", handler, REMOTE, None)  # the default runtime context: its variable set directly
    assert not used and type(seen[-1]) is LightSpan
    monkeypatch.setattr(context, "_RUNTIME_CONTEXT", Counting())
    await scope.run("call f", handler, REMOTE, None)
    assert used == ["attach", "detach"] and type(seen[-1]) is LightSpan
    assert trace.get_current_span() is trace.INVALID_SPAN
