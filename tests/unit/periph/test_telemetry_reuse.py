"""Telemetry set up again after a shutdown reuses the process's providers (OpenTelemetry registers an at-fork
callback per provider, processor and reader that is never removed), yet each client's records are its own."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import telemetry
from iii.logger import Logger
from iii.telemetry_types import OtelConfig

from .conftest import Frames


def _start(service: str) -> Frames:
    frames = Frames()
    telemetry.init_otel(
        OtelConfig(enabled=True, service_name=service, fetch_instrumentation_enabled=False,
                   metrics_export_interval_ms=3_600_000),
        frame_sink=frames.append,
    )
    return frames


def _services(frames: Frames, prefix: bytes, key: str) -> set[str]:
    return {
        attribute["value"]["stringValue"]
        for body in frames.bodies(prefix)
        for resource in body[key]
        for attribute in resource["resource"]["attributes"]
        if attribute["key"] == "service.name"
    }


def _record(name: str) -> None:
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span(name):
        Logger(service_name=name).info(f"{name} log")
    telemetry.get_meter().create_counter("reuse.count").add(1)


def test_a_second_client_reuses_the_providers_with_its_own_resource_and_fresh_metrics() -> None:
    telemetry.shutdown_otel()
    first = _start("first")
    providers = (telemetry.runtime().tracer_provider, telemetry.runtime().meter_provider,
                 telemetry.runtime().log_provider)
    user_spans = InMemorySpanExporter()
    telemetry.runtime().tracer_provider.add_span_processor(SimpleSpanProcessor(user_spans))
    _record("first")
    telemetry.shutdown_otel()  # flushes: everything recorded so far is in first's sink when it returns

    second = _start("second")
    try:
        again = (telemetry.runtime().tracer_provider, telemetry.runtime().meter_provider,
                 telemetry.runtime().log_provider)
        assert again == providers  # the same objects: no new at-fork callbacks
        _record("second")
        telemetry.force_flush()
    finally:
        telemetry.shutdown_otel()

    assert [span["name"] for span in first.spans()] == ["first"]
    assert [span["name"] for span in second.spans()] == ["second"]
    for frames, service in ((first, "first"), (second, "second")):
        assert _services(frames, b"OTLP", "resourceSpans") == {service}
        assert _services(frames, b"LOGS", "resourceLogs") == {service}
        assert _services(frames, b"MTRC", "resourceMetrics") == {service}
        assert len(frames.logs()) == 1
        # the second client's counter starts from zero, not from the first client's total
        assert frames.metrics()["reuse.count"]["sum"]["dataPoints"][0]["asInt"] == "1"
    # a processor the first client's user added ended with it, as the providers' shutdown ended it before
    assert [span.name for span in user_spans.get_finished_spans()] == ["first"]


class _Waiting(Frames):
    """Frames, with an event set when one with ``prefix`` arrives."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__()
        self.prefix, self.arrived = prefix, threading.Event()

    def append(self, frame: bytes) -> None:
        super().append(frame)
        if frame.startswith(self.prefix):
            self.arrived.set()


def _pipeline_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("Otel") and t.is_alive())


def _start_waiting(service: str, prefix: bytes) -> _Waiting:
    frames = _Waiting(prefix)
    telemetry.init_otel(
        OtelConfig(enabled=True, service_name=service, fetch_instrumentation_enabled=False,
                   metrics_export_interval_ms=50),  # its own pipeline: the interval is part of the key
        frame_sink=frames.append,
    )
    return frames


def test_a_parked_pipeline_runs_no_thread_and_its_threads_export_again_on_reuse() -> None:
    # before: the three threads of the parked pipeline (span and log batch workers, metric ticker) ran on after
    # the last client's shutdown, the log worker waking every 100 ms for nothing
    telemetry.shutdown_otel()
    before = _pipeline_threads()
    _start_waiting("pause-first", b"MTRC")
    assert len(_pipeline_threads()) == len(before) + 3
    telemetry.shutdown_otel()
    assert _pipeline_threads() == before

    for prefix in (b"MTRC", b"LOGS", b"OTLP"):  # each thread exports again on its own, without a flush
        frames = _start_waiting("pause-again", prefix)
        try:
            assert len(_pipeline_threads()) == len(before) + 3
            if prefix == b"MTRC":
                telemetry.get_meter().create_counter("pause.count").add(1)
            elif prefix == b"LOGS":
                Logger(service_name="pause").info("after reuse")
            elif prefix == b"OTLP":
                tracer: Any = telemetry.get_tracer()
                with tracer.start_as_current_span("after reuse"):
                    pass
            assert frames.arrived.wait(10), f"no {prefix!r} frame from the resumed pipeline's thread"
        finally:
            telemetry.shutdown_otel()
        assert _pipeline_threads() == before


def test_a_second_pipeline_of_one_configuration_parked_shuts_the_first_down() -> None:
    # A client that starts while the last one's shutdown still flushes into a slow sink builds a second pipeline of
    # the same configuration; before, parking it dropped the first with its providers still registered at exit
    telemetry.shutdown_otel()
    in_sink, gate = threading.Event(), threading.Event()

    def slow_sink(frame: bytes) -> None:
        in_sink.set()
        gate.wait(10)

    config = OtelConfig(enabled=True, service_name="displaced", fetch_instrumentation_enabled=False,
                        metrics_export_interval_ms=3_600_001)
    telemetry.init_otel(config, frame_sink=slow_sink)
    first = telemetry.runtime().pipeline
    tracer: Any = telemetry.get_tracer()
    with tracer.start_as_current_span("flushed slowly"):
        pass
    closing = threading.Thread(target=telemetry.shutdown_otel)
    closing.start()
    try:
        assert in_sink.wait(10)
        telemetry.init_otel(config, frame_sink=Frames().append)
        second = telemetry.runtime().pipeline
        assert second is not first
    finally:
        gate.set()
        closing.join(10)
    telemetry.shutdown_otel()
    parked = list(telemetry.runtime()._parked.values())
    assert any(p is second for p in parked) and not any(p is first for p in parked)
    assert first is not None and first.tracer_provider._atexit_handler is None  # shut down


def test_resume_on_another_layout_changes_nothing_and_says_so() -> None:
    from iii.otel_internals import InternalsMissing, resume_workers

    class OtherBatch:  # a stopped batch processor of a layout without _at_fork_reinit
        _shutdown = True
        _worker_thread = threading.Thread(target=lambda: None)

    batch = OtherBatch()
    try:
        resume_workers([batch], [])
    except InternalsMissing:
        pass
    else:
        raise AssertionError("resumed a batch processor it could not restart")
    assert batch._shutdown is True  # before: set False, then AttributeError out of the client's start


def test_a_client_starting_while_the_last_other_one_shuts_down_keeps_telemetry_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # before: B's init saw telemetry on (a no-op), A's release shut it down, B's register saw it off: B ran with no
    # tracer and nothing it recorded went anywhere (314 of 1,200 such starts under stress)
    from iii.telemetry_wiring import TelemetryWiring

    telemetry.shutdown_otel()
    runtime = telemetry.runtime()
    config = OtelConfig(enabled=True, service_name="membership", fetch_instrumentation_enabled=False,
                        metrics_export_interval_ms=3_600_002)
    loop = asyncio.new_event_loop()
    first, second = TelemetryWiring(), TelemetryWiring()
    a, b = object(), object()
    first.start(a, config, loop, Frames().append)
    between, gate = threading.Event(), threading.Event()
    register = runtime.register_client

    def register_late(owner: object, *args: Any) -> None:
        if owner is b:
            between.set()
            gate.wait(10)
        register(owner, *args)

    monkeypatch.setattr(runtime, "register_client", register_late)
    starting = threading.Thread(target=second.start, args=(b, config, loop, Frames().append))
    starting.start()
    releasing = threading.Thread(target=lambda: asyncio.run(first.release(a)))
    try:
        assert between.wait(10)
        releasing.start()
        releasing.join(0.3)  # (with the fix it waits for B's start to end; before, it shut telemetry down now)
    finally:
        gate.set()
        starting.join(10)
        releasing.join(10)
    try:
        assert telemetry.client_count() == 1 and telemetry.is_initialized()
        assert telemetry.get_tracer() is not None
    finally:
        asyncio.run(second.release(b))
        loop.close()
    assert telemetry.client_count() == 0 and not telemetry.is_initialized()
