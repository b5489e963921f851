"""Attack A-T: telemetry never costs a worker its connection. A span batch over the engine's max_message_size
(4 MiB) was one frame, and the engine closed the worker's connection (1009) with every call in flight; now the batch
is split under EngineSpanExporter.max_frame_bytes and a span over it alone is dropped (counted, logged)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

from iii import OtelConfig, telemetry
from iii.logger import Logger

from .conftest import MakeWorker, RealEngineThread, workers_of

pytestmark = pytest.mark.our_engine("calls between two workers of this process on our engine")

ON = OtelConfig(enabled=True, service_name="big-span", fetch_instrumentation_enabled=False,
                metrics_enabled=False, logs_enabled=False)


@pytest.fixture
def make_worker() -> Iterator[MakeWorker]:
    telemetry.shutdown_otel()
    with RealEngineThread() as real:
        yield from workers_of(real.url)
    telemetry.shutdown_otel()


def test_big_span_batches_leave_the_worker_connected(make_worker: MakeWorker) -> None:
    callee = make_worker("callee", otel=ON)
    caller = make_worker("caller", otel=ON)
    exporter = telemetry.runtime().tracer_provider.own_processor._batch_processor._exporter

    async def echo(data: Any) -> Any:
        trace.get_current_span().set_attribute("payload", "x" * data["n"])
        return data["n"]

    callee.register_function("t::echo", echo)
    callee.list_functions()
    for _ in range(50):  # 5 MB of spans in one batch: split into frames the engine takes
        assert caller.trigger({"function_id": "t::echo", "payload": {"n": 100_000}}) == 100_000
    assert telemetry.force_flush()
    assert caller.trigger({"function_id": "t::echo", "payload": {"n": 5_000_000}}) == 5_000_000
    assert telemetry.force_flush()  # one span over the limit alone: dropped
    for _ in range(3):
        assert caller.trigger({"function_id": "t::echo", "payload": {"n": 1}}) == 1
    assert exporter.oversized == 1


def test_a_log_record_over_the_frame_limit_leaves_the_worker_connected(make_worker: MakeWorker) -> None:
    logs_on = OtelConfig(enabled=True, service_name="big-log", fetch_instrumentation_enabled=False,
                         metrics_enabled=False, logs_enabled=True)
    callee = make_worker("callee", otel=logs_on)
    caller = make_worker("caller", otel=logs_on)
    exporter = telemetry.runtime().log_provider._multi_log_record_processor._log_record_processors[0]
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
    assert exporter._batch_processor._exporter.oversized == 1
