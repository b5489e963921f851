"""OpenTelemetry's log queue is bounded in records only (2,048): ``Logger`` records of 1 MB made faster than they were
exported waited there by the thousand (1,500 of them: 1.2 GB). The client's log processor now also bounds the bytes
waiting between a record's emit and the end of its export: past ``logs_max_queue_bytes`` a record is dropped at once,
counted and warned about, never queued; one over a frame alone (it could never be sent) too, as ``oversized``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry._logs import LogRecord
from polling import until

from iii import InitOptions, telemetry
from iii.iii import register_worker
from iii.logger import Logger
from iii.telemetry_types import OtelConfig

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("fresh_telemetry")]

MB = 1_000_000
BUDGET = 4 * 1024 * 1024


def _start(frames: list[bytes], **options: Any) -> None:
    telemetry.init_otel(OtelConfig(enabled=True, service_name="log-bytes", fetch_instrumentation_enabled=False,
                                   metrics_enabled=False, logs_enabled=True, **options), frame_sink=frames.append)


def _processor() -> Any:
    (processor,) = telemetry.runtime().log_provider._multi_log_record_processor._log_record_processors
    return processor


@contextlib.contextmanager
def _export_held() -> Iterator[None]:
    """Nothing leaves the queue meanwhile: the export thread waits for the export lock (an engine that reads slowly,
    a slow serialisation)."""
    with _processor()._batch_processor._export_lock:
        yield


def _bodies(frames: list[bytes]) -> list[str]:
    return [record["body"]["stringValue"] for frame in frames if frame.startswith(b"LOGS")
            for rl in json.loads(frame[4:])["resourceLogs"] for sl in rl["scopeLogs"] for record in sl["logRecords"]]


def test_big_records_past_the_byte_budget_are_dropped_counted_and_told_once(caplog: pytest.LogCaptureFixture) -> None:
    frames: list[bytes] = []
    _start(frames, logs_max_queue_bytes=BUDGET, logs_batch_size=1)
    budget = _processor().budget
    earlier = budget.dropped  # (a pipeline another test parked, reused: its counters go on)
    logger = Logger(service_name="big")
    with caplog.at_level(logging.WARNING, logger="iii.telemetry"), _export_held():
        for n in range(20):
            logger.info(f"r{n}", {"blob": "x" * MB})
        waiting = budget.queued_records
        assert 1 <= waiting <= 4 and budget.queued_bytes <= BUDGET
    assert budget.dropped - earlier == 20 - waiting and budget.oversized == budget.queue_full == 0
    (warning,) = [text for text in caplog.messages if "dropped before OpenTelemetry's log queue" in text]
    assert "1 since the last such warning (this one: over_budget)" in warning
    assert telemetry.force_flush()
    # the ones admitted (the oldest) reach the sink; the queue's bytes are free again
    assert _bodies(frames) == [f"r{n}" for n in range(waiting)]
    assert (budget.queued_records, budget.queued_bytes) == (0, 0)
    logger.info("after", {"blob": "x" * MB})
    assert telemetry.force_flush()
    assert _bodies(frames)[-1] == "after"


def test_a_record_over_a_frame_alone_is_dropped_at_emit_as_oversized() -> None:
    frames: list[bytes] = []
    _start(frames, logs_max_queue_bytes=64 * 1024 * 1024)
    processor = _processor()
    logger = Logger(service_name="big")
    logger.info("too big", "x" * (5 * 1024 * 1024))
    logger.info("fits", "x" * MB)
    assert telemetry.force_flush()
    assert _bodies(frames) == ["fits"]
    assert processor.budget.oversized == 1
    assert processor._batch_processor._exporter.oversized == 0  # never queued nor written as OTLP-JSON


@pytest.fixture
def sdk_warnings_unfiltered() -> Iterator[None]:
    """The SDK's "Queue full" warning is filtered as a duplicate for 20 s after one (its text unformatted: a log
    queue's hid a span queue's): forget this test's, for the tests after it."""
    yield
    for duplicates in logging.getLogger("opentelemetry.sdk._shared_internal").filters:
        with contextlib.suppress(AttributeError):
            del duplicates.last_log  # type: ignore[attr-defined]


@pytest.mark.usefixtures("sdk_warnings_unfiltered")
def test_a_full_queue_still_pushes_its_oldest_out_and_their_bytes_are_freed() -> None:
    """OpenTelemetry's own bound (records) keeps its behaviour: the oldest are pushed out, counted in
    ``queue_full``; the sizes the budget keeps follow, so that nothing stays accounted once the queue is empty."""
    frames: list[bytes] = []
    _start(frames, logs_max_queue_bytes=BUDGET, logs_batch_size=4)
    processor = _processor()
    max_records = processor._batch_processor._max_queue_size
    logger = Logger(service_name="small")
    with _export_held():
        for n in range(max_records + 50):
            logger.info(f"s{n}", {"k": n})
        assert processor.budget.queued_records == max_records
    assert processor.queue_full == 50
    assert telemetry.force_flush()
    assert len(_bodies(frames)) == max_records
    assert (processor.budget.queued_records, processor.budget.queued_bytes) == (0, 0)


def test_the_budget_comes_from_the_environment_when_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LOGS_MAX_QUEUE_BYTES", str(3 * MB))
    _start([])
    assert _processor().budget.max_bytes == 3 * MB


def test_a_reused_pipeline_starts_with_nothing_accounted() -> None:
    frames: list[bytes] = []
    _start(frames, logs_max_queue_bytes=BUDGET)
    first = _processor()
    with _export_held():
        Logger().info("one", "x" * MB)
    telemetry.shutdown_otel()
    _start(frames, logs_max_queue_bytes=BUDGET)
    processor = _processor()
    assert processor is first  # the parked pipeline, reused
    assert (processor.budget.queued_records, processor.budget.queued_bytes, processor.budget.open) == (0, 0, True)
    Logger().info("two", "x" * MB)
    assert telemetry.force_flush()
    assert _bodies(frames) == ["one", "two"]
    assert processor.budget.queued_bytes == 0


def test_by_default_at_most_16_mib_of_records_wait() -> None:
    """Default options: of 40 records of 1 MB made while nothing was exported, about 16 MiB wait and reach the
    engine; before, all 40 waited (1,500 of them: 1.2 GB)."""
    frames: list[bytes] = []
    _start(frames)
    with _export_held():
        for n in range(40):
            Logger().info(f"r{n}", "x" * MB)
    assert telemetry.force_flush()
    assert _bodies(frames) == [f"r{n}" for n in range(16)]


def test_where_the_queue_cannot_be_watched_the_budget_refuses_past_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an OpenTelemetry whose batch processor is of another layout, a push-out of its full queue would go unseen
    and its record's size stay accounted for good (the budget filling up for ever): the newest is refused instead,
    counted in ``queue_full``."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter

    from iii import otel_internals
    from iii.telemetry import LogQueueBudget, _counting_log_processor

    monkeypatch.setattr(otel_internals, "_fields_hold", lambda *args: False)  # (batch_of: another layout)
    exporter = InMemoryLogRecordExporter()
    budget = LogQueueBudget(BUDGET)
    processor = _counting_log_processor(BatchLogRecordProcessor)(
        exporter, max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000, budget=budget)
    monkeypatch.undo()
    provider = LoggerProvider()
    provider.add_log_record_processor(processor)
    otel_logger = provider.get_logger("other-layout")
    with processor._batch_processor._export_lock:
        for n in range(10):
            otel_logger.emit(LogRecord(body=f"r{n}"))
        assert budget.queued_records == 4
    assert processor.queue_full == budget.queue_full == 6
    provider.force_flush()
    processor.release_exported(4)  # (the in-memory exporter tells no one)
    assert [item.log_record.body for item in exporter.get_finished_logs()] == ["r0", "r1", "r2", "r3"]
    assert (budget.queued_records, budget.queued_bytes) == (0, 0)
    provider.shutdown()


async def test_the_engine_gets_every_record_the_budget_admitted() -> None:
    """End to end, our engine with its observability module: of 30 records of 1 MB made while nothing was exported,
    those the budget admitted are stored by the engine, and every other one is counted as dropped."""
    from iii_engine import Engine, EngineConfig, ModuleSpec
    from iii_engine.modules.observability.module import OtelModule

    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::observability::OtelModule")])
    async with Engine(config=config) as engine:
        (store,) = [module.logs for module in engine.modules.values() if isinstance(module, OtelModule)]
        client = await asyncio.to_thread(register_worker, engine.url, InitOptions(
            worker_name="big-logs", enable_metrics_reporting=False,
            otel=OtelConfig(enabled=True, service_name="big-logs", fetch_instrumentation_enabled=False,
                            metrics_enabled=False, logs_max_queue_bytes=BUDGET)))
        try:
            budget = _processor().budget
            earlier = budget.over_budget  # (a pipeline another test parked, reused: its counters go on)
            with _export_held():
                for n in range(30):
                    Logger(service_name="big-logs").info(f"r{n}", "x" * MB)
            assert await asyncio.to_thread(telemetry.force_flush, 10_000)
            admitted = 30 - (budget.over_budget - earlier)
            assert 1 <= admitted <= 4
            await until(lambda: len(store) == admitted)
            assert [entry["body"] for entry in store.snapshot().entries] == [f"r{n}" for n in range(admitted)]
        finally:
            await asyncio.to_thread(client.shutdown)
