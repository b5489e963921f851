"""Mends of telemetry's review: the internals checks of parked pipelines (one helper: nothing changed and one
warning when a field is missing), the fallback warning saying what each fallback costs, and a shutdown racing
another one returning only once the other's flush is over."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import otel_internals, telemetry
from iii.otel_internals import InternalsMissing, batch_of, pause_workers, resume_workers
from iii.telemetry_types import OtelConfig
from iii.warn_once import WarnOnce


class _Reader:
    """A periodic metric reader's fields as pause_workers/resume_workers use them (no thread: infinite interval)."""

    def __init__(self) -> None:
        self._shutdown_event = threading.Event()
        self._daemon_thread: threading.Thread | None = None
        self._shutdown = False

    def _at_fork_reinit(self) -> None:
        raise AssertionError("no thread to start again")


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The warnings of iii.otel_internals, each internal's warned afresh."""
    monkeypatch.setattr(otel_internals, "_warn_once", WarnOnce(otel_internals.log))
    caplog.set_level(logging.WARNING, "iii.otel_internals")
    return caplog


def _batch(processor: BatchSpanProcessor) -> Any:
    batch = batch_of(processor)
    assert batch is not None
    return batch


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "iii.otel_internals"]


def test_a_reader_without_its_thread_field_is_not_paused_and_nothing_changes(
        warnings: pytest.LogCaptureFixture) -> None:
    # before: an absent _daemon_thread passed the check (getattr's default None is a Thread | None), the batches
    # were stopped, then AttributeError out of the client's shutdown
    processor = BatchSpanProcessor(InMemorySpanExporter())
    batch = _batch(processor)
    reader = _Reader()
    del reader._daemon_thread
    try:
        assert pause_workers([batch], [reader], timeout_s=5) is False
        assert batch._shutdown is False and batch._worker_thread.is_alive()  # nothing changed
        assert not reader._shutdown_event.is_set()
        with pytest.raises(InternalsMissing):  # before: the batch resumed, then AttributeError
            resume_workers([batch], [reader])
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]
    (message,) = _messages(warnings)  # one warning for both calls
    assert "PeriodicExportingMetricReader._daemon_thread" in message


def test_a_reader_shut_down_by_its_user_is_not_paused_and_not_called_another_layout(
        warnings: pytest.LogCaptureFixture) -> None:
    reader = _Reader()
    reader._shutdown = True
    assert pause_workers([], [reader], timeout_s=5) is False
    assert not reader._shutdown_event.is_set()
    assert _messages(warnings) == []  # before: "internal ... not found (another opentelemetry-sdk layout)"


def test_each_check_warns_once_naming_the_first_field_of_another_type(warnings: pytest.LogCaptureFixture) -> None:
    processor = BatchSpanProcessor(InMemorySpanExporter())
    batch = _batch(processor)
    try:
        batch_thread = batch._worker_thread
        batch._worker_thread = "not a thread"
        for _ in range(2):
            assert pause_workers([batch], [], timeout_s=5) is False
            with pytest.raises(InternalsMissing):
                resume_workers([batch], [])
        batch._worker_thread = batch_thread
        assert batch._shutdown is False and batch_thread.is_alive()
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]
    (message,) = _messages(warnings)
    assert "BatchProcessor._worker_thread" in message


def test_a_batch_field_of_another_type_leaves_no_batch(warnings: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    processor = BatchSpanProcessor(InMemorySpanExporter())
    try:
        batch: Any = processor._batch_processor
        monkeypatch.setattr(batch, "_max_queue_size", "2048")
        assert batch_of(processor) is None
        del batch._max_queue_size
        assert batch_of(processor) is None
    finally:
        monkeypatch.undo()
        processor.shutdown()  # type: ignore[no-untyped-call]
    (message,) = _messages(warnings)
    assert "BatchProcessor._max_queue_size" in message


def _config(service: str, interval_ms: int) -> OtelConfig:
    # a metrics interval of its own: the test's pipeline is not another test's parked one
    return OtelConfig(enabled=True, service_name=service, fetch_instrumentation_enabled=False,
                      metrics_export_interval_ms=interval_ms)


@pytest.mark.parametrize("how", ["sync", "async", "release"])
def test_every_shutdown_path_flushes_then_parks_through_one_step(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry.shutdown_otel()
    runtime = telemetry.runtime()
    frames: list[bytes] = []
    owner = object()
    telemetry.init_otel(_config("one-step", 3_600_010), frame_sink=frames.append)
    telemetry.register_client(owner, frames.append)
    pipeline = runtime.pipeline
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span("flushed"):
        pass
    steps: list[Any] = []
    flush_and_park = runtime._flush_and_park

    def counted(taken: Any) -> None:
        steps.append(taken)
        flush_and_park(taken)

    monkeypatch.setattr(runtime, "_flush_and_park", counted)
    if how == "sync":
        telemetry.shutdown_otel()
    elif how == "async":
        asyncio.run(telemetry.shutdown_otel_async())
    else:
        asyncio.run(telemetry.release_client_async(owner))
    assert pipeline is not None and steps == [pipeline]
    assert runtime._parked.get(pipeline.key) is pipeline
    assert any(frame.startswith(b"OTLP") for frame in frames)  # flushed before it was parked


SAME = "slower but the same telemetry"
LEAK = "~6 KB per client"


def _one_warning(caplog: pytest.LogCaptureFixture) -> str:
    (message,) = _messages(caplog)
    return message


def test_a_missing_internal_of_a_per_span_path_says_slower_same_telemetry(warnings: pytest.LogCaptureFixture) -> None:
    assert otel_internals.composite_parts(object()) == ()
    message = _one_warning(warnings)
    assert "CompositePropagator._propagators" in message and SAME in message and LEAK not in message


def test_a_missing_internal_of_pipeline_reuse_says_the_leak_returns(warnings: pytest.LogCaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # before: "slower but the same telemetry", while every client built its own providers (~6 KB each for good)
    from opentelemetry.sdk.resources import Resource

    from iii.light_span import OwnTracerProvider

    monkeypatch.setattr(otel_internals, "_TRACER_PROVIDER_FIELDS", ("_renamed_tracers",))
    provider = OwnTracerProvider()
    try:
        with pytest.raises(InternalsMissing):
            otel_internals.retarget_providers(provider, None, None, Resource({"service.name": "other"}))
    finally:
        provider.shutdown()
    message = _one_warning(warnings)
    assert "TracerProvider._renamed_tracers" in message
    assert "not reused" in message and LEAK in message and SAME not in message


def test_a_missing_worker_field_says_the_leak_returns(warnings: pytest.LogCaptureFixture) -> None:
    assert pause_workers([], [object()], timeout_s=5) is False
    message = _one_warning(warnings)
    assert "not reused" in message and LEAK in message and SAME not in message


def test_a_missing_batch_internal_says_both_costs(warnings: pytest.LogCaptureFixture) -> None:
    # the batch processor's fields serve the span texts' inline emit (speed) and pipeline reuse
    assert batch_of(object()) is None
    message = _one_warning(warnings)
    assert SAME in message and "not reused" in message and LEAK in message


def test_without_the_agnostic_context_manager_the_warning_names_the_decorator_case(
        warnings: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.util._decorator", None)  # the import fails: another layout
    otel_internals.agnostic_contextmanager(lambda: iter([None]))
    message = _one_warning(warnings)
    assert "decorator of a coroutine function" in message and LEAK not in message


class _HeldSink:
    """A frame sink whose first span frame waits for ``release`` (the first shutdown's flush is then in flight)."""

    def __init__(self) -> None:
        self.in_sink, self.release, self.delivered = threading.Event(), threading.Event(), threading.Event()

    def append(self, frame: bytes) -> None:
        if frame.startswith(b"OTLP") and not self.delivered.is_set():
            self.in_sink.set()
            self.release.wait(10)
            self.delivered.set()


def _first_shutdown_held(sink: _HeldSink, interval_ms: int) -> threading.Thread:
    """Telemetry with one span recorded, and a thread shutting it down, its flush held in ``sink``."""
    telemetry.shutdown_otel()
    telemetry.init_otel(_config("racing-shutdowns", interval_ms), frame_sink=sink.append)
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span("flushed by the first shutdown"):
        pass
    first = threading.Thread(target=telemetry.shutdown_otel)
    first.start()
    assert sink.in_sink.wait(10)
    return first


def _shut_down(how: str) -> None:
    if how == "sync":
        telemetry.shutdown_otel()
    else:
        asyncio.run(telemetry.shutdown_otel_async())


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_shutdown_racing_another_returns_after_the_others_flush(how: str) -> None:
    # before: the second shutdown found nothing to take and returned at once, the first's span still in its flush: a
    # caller exiting then lost it
    sink = _HeldSink()
    first = _first_shutdown_held(sink, 3_600_011)
    delivered_at_return: list[bool] = []

    def shut_down_too() -> None:
        _shut_down(how)
        delivered_at_return.append(sink.delivered.is_set())

    second = threading.Thread(target=shut_down_too)
    try:
        second.start()
        second.join(0.5)  # (room for the second to return early, as it did before)
    finally:
        sink.release.set()
        first.join(10)
        second.join(10)
    assert delivered_at_return == [True]


def test_a_shutdown_waits_for_anothers_flush_no_longer_than_a_flush_may_take(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _HeldSink()
    first = _first_shutdown_held(sink, 3_600_012)
    monkeypatch.setattr(telemetry, "_FLUSH_TIMEOUT_MS", 200)  # (read at the wait; the first's flush is under way)
    try:
        second = threading.Thread(target=telemetry.shutdown_otel)
        second.start()
        second.join(10)
        assert not second.is_alive() and not sink.delivered.is_set()  # returned, bounded, the flush still held
    finally:
        sink.release.set()
        first.join(10)


def test_a_shutdown_from_inside_a_flush_does_not_wait_for_that_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # a sink with no loop runs on the shutdown's own thread: one that shut telemetry down (on a send failure, say)
    # waited for its caller's flush, which waited for it (the whole bound, 30 s by default)
    telemetry.shutdown_otel()
    monkeypatch.setattr(telemetry, "_FLUSH_TIMEOUT_MS", 3_000)
    inner: list[float] = []

    def sink(frame: bytes) -> None:
        if frame.startswith(b"OTLP") and not inner:
            started = time.monotonic()
            telemetry.shutdown_otel()
            inner.append(time.monotonic() - started)

    telemetry.init_otel(_config("shutdown-in-sink", 3_600_013), frame_sink=sink)
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span("flushed"):
        pass
    started = time.monotonic()
    telemetry.shutdown_otel()
    assert len(inner) == 1 and inner[0] < 1.0, inner
    assert time.monotonic() - started < 2.0


def test_a_flush_that_never_ends_holds_later_shutdowns_once_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: every later shutdown, telemetry on or off, waited the whole bound again, for the life of the process
    telemetry.shutdown_otel()
    monkeypatch.setattr(telemetry, "_FLUSH_TIMEOUT_MS", 1_000)
    stuck, release = threading.Event(), threading.Event()

    def sink(frame: bytes) -> None:
        if frame.startswith(b"OTLP") and not stuck.is_set():
            stuck.set()
            release.wait(30)

    telemetry.init_otel(_config("flush-never-ends", 3_600_014), frame_sink=sink)
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span("held"):
        pass
    first = threading.Thread(target=telemetry.shutdown_otel, daemon=True)
    first.start()
    try:
        assert stuck.wait(10)
        took = []
        for _ in range(3):
            started = time.monotonic()
            telemetry.shutdown_otel()
            took.append(time.monotonic() - started)
        assert took[0] < 1.5 and took[1] < 0.3 and took[2] < 0.3, took
    finally:
        release.set()
        first.join(10)


def test_an_async_shutdown_cancelled_before_its_thread_began_is_still_carried_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # before: its flush never ran (the executor was busy), its pipeline was never parked, and every later shutdown
    # waited for that flush for the whole bound, each time
    telemetry.shutdown_otel()
    monkeypatch.setattr(telemetry, "_FLUSH_TIMEOUT_MS", 3_000)
    frames: list[bytes] = []
    telemetry.init_otel(_config("cancelled-async-shutdown", 3_600_015), frame_sink=frames.append)
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span("flushed after all"):
        pass

    async def cancelled_while_queued() -> None:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1)
        loop.set_default_executor(executor)
        release = threading.Event()
        busy = loop.run_in_executor(None, release.wait, 30)  # the loop's executor is taken
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(telemetry.shutdown_otel_async(), 0.2)
        finally:
            release.set()
            await busy

    asyncio.run(cancelled_while_queued())
    started = time.monotonic()
    telemetry.shutdown_otel()
    assert time.monotonic() - started < 1.0
    assert any(frame.startswith(b"OTLP") for frame in frames)
    assert telemetry.runtime()._flushing == []
