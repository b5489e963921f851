"""Attack A-T: telemetry never costs a worker its connection. A span batch over the engine's max_message_size
(4 MiB) was one frame, and the engine closed the worker's connection (1009) with every call in flight; now the batch
is split under EngineSpanExporter.max_frame_bytes and a span over it alone is dropped (counted, logged)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

from iii import OtelConfig, telemetry
from iii.logger import Logger

from .conftest import MakeWorker, RealEngineThread, workers_of

pytestmark = [pytest.mark.our_engine("calls between two workers of this process on our engine"),
              pytest.mark.usefixtures("fresh_telemetry")]

ON = OtelConfig(enabled=True, service_name="big-span", fetch_instrumentation_enabled=False,
                metrics_enabled=False, logs_enabled=False)


@pytest.fixture
def make_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    yield from workers_of(real.url)


def test_big_span_batches_leave_the_worker_connected(make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    callee = make_worker("callee", otel=ON)
    caller = make_worker("caller", otel=ON)
    batch = telemetry.runtime().tracer_provider.own_processor._batch_processor
    exporter = batch._exporter
    handler_spans = threading.Semaphore(0)  # released as each handler span reaches the batch (after the answer)
    emit = batch.emit

    def counting(item: Any) -> None:
        emit(item)
        if '"name":"call t::echo"' in item if type(item) is str else item.name == "call t::echo":
            handler_spans.release()

    monkeypatch.setattr(batch, "emit", counting)  # before the first handler span binds the batch's emit

    async def echo(data: Any) -> Any:
        trace.get_current_span().set_attribute("payload", "x" * data["n"])
        return data["n"]

    callee.register_function("t::echo", echo)
    callee.list_functions()
    for _ in range(50):  # 5 MB of spans in one batch: split into frames the engine takes
        assert caller.trigger({"function_id": "t::echo", "payload": {"n": 100_000}}) == 100_000
    for _ in range(50):
        assert handler_spans.acquire(timeout=10)
    assert telemetry.force_flush()
    assert caller.trigger({"function_id": "t::echo", "payload": {"n": 5_000_000}}) == 5_000_000
    assert handler_spans.acquire(timeout=10)
    assert telemetry.force_flush()  # one span over the limit alone: dropped
    for _ in range(3):
        assert caller.trigger({"function_id": "t::echo", "payload": {"n": 1}}) == 1
    assert exporter.oversized == 1


def test_a_log_record_over_the_frame_limit_leaves_the_worker_connected(make_worker: MakeWorker) -> None:
    logs_on = OtelConfig(enabled=True, service_name="big-log", fetch_instrumentation_enabled=False,
                         metrics_enabled=False, logs_enabled=True)
    callee = make_worker("callee", otel=logs_on)
    caller = make_worker("caller", otel=logs_on)
    processor = telemetry.runtime().log_provider._multi_log_record_processor._log_record_processors[0]
    oversized = processor.budget.oversized  # (a reused pipeline's counters go on)
    logger = Logger()

    async def echo(data: Any) -> Any:
        logger.info("payload", {"blob": "x" * data["n"]})
        return data["n"]

    callee.register_function("t::echo", echo)
    callee.list_functions()
    assert caller.trigger({"function_id": "t::echo", "payload": {"n": 5_000_000}}) == 5_000_000
    assert telemetry.force_flush()
    for _ in range(3):
        assert caller.trigger({"function_id": "t::echo", "payload": {"n": 1}}) == 1
    assert telemetry.force_flush()
    # refused at its emit by the log byte budget (over a frame alone), never serialized for the exporter to drop
    assert processor.budget.oversized - oversized == 1


def test_a_metrics_collection_over_the_frame_limit_leaves_the_worker_connected(make_worker: MakeWorker) -> None:
    metrics_on = OtelConfig(enabled=True, service_name="big-metrics", fetch_instrumentation_enabled=False,
                            metrics_enabled=True, logs_enabled=False, metrics_export_interval_ms=3_600_000)
    callee = make_worker("callee", otel=metrics_on)
    caller = make_worker("caller", otel=metrics_on)

    async def echo(data: Any) -> Any:
        return data

    callee.register_function("t::echo", echo)
    callee.list_functions()
    meter = telemetry.get_meter()
    for n in range(15):  # 15 metrics of 1,999 series (under the SDK's 2,000 per metric): about 5 MB of OTLP JSON
        counter = meter.create_counter(f"at.series.{n}")
        for i in range(1_999):
            counter.add(1, {"series": f"s{i:06d}", "function": "t::echo"})
    assert telemetry.force_flush()
    for _ in range(3):
        assert caller.trigger({"function_id": "t::echo", "payload": 1}) == 1
