"""Mends of an attack on the observability module: nothing a worker sent or an alert started is lost without a
count at the engine's stop, metric kinds our own SDK sends are stored, console echo and alert rules are bounded.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.hanging_webhook import hanging_webhook
from tests.integration.modules.test_ao_observability_attack import log_frame, send, telemetry
from tests.integration.modules.test_observability import engine_with, eventually
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the observability module")


async def test_frames_queued_at_stop_are_ingested_within_the_bound() -> None:
    # Before: the stop cancelled the ingest task, and the frames still queued were neither stored nor counted.
    engine = engine_with({"enabled": True, "exporter": "memory", "logs_console_output": False,
                          "export_stop_timeout_ms": 10_000})
    await engine.start()
    module: Any = engine.module("observability")
    for i in range(50):  # no await between: all 50 wait in the queue when the stop begins
        module.ingest("LOGS", log_frame(f"dec05 {i}")[4:])
    await engine.stop()
    assert module.ingested_frames == 50 and module.dropped_frames == 0
    assert len(module.logs) == 50 and module._queued_bytes == 0


async def test_frames_left_at_stop_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_with({"logs_console_output": False, "export_stop_timeout_ms": 0})
    await engine.start()
    module: Any = engine.module("observability")
    for i in range(50):
        module.ingest("LOGS", log_frame(f"dec05 {i}")[4:])
    with caplog.at_level(logging.WARNING, "iii_engine.modules.observability"):
        await engine.stop()
    assert module.ingested_frames + module.dropped_frames == 50 and module.dropped_frames > 0
    lines = [r.getMessage() for r in caplog.records if "not ingested within" in r.getMessage()]
    assert len(lines) == 1 and f"{module.dropped_frames} telemetry frame(s)" in lines[0]
    module.ingest("LOGS", log_frame("dec05 late")[4:])  # after the stop: dropped and counted, not queued
    assert module.dropped_frames == 50 - module.ingested_frames + 1 and module._queue.empty()


async def test_a_webhook_running_at_stop_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with hanging_webhook() as hook:
        rules = [{"name": "dec05-hook", "metric": "iii.invocations.total", "threshold": 0, "operator": ">=",
                  "action": {"type": "webhook", "url": hook.url}}]
        engine = engine_with({"alerts": rules, "export_stop_timeout_ms": 100})
        await engine.start()
        module: Any = engine.module("observability")
        module.evaluate_alerts()
        await until(lambda: bool(hook.arrived))
        with caplog.at_level(logging.WARNING, "iii_engine.modules.observability"):
            await engine.stop()
        assert module.webhook_failed == 1 and module.webhook_sent == 0
        assert sum("alert webhook delivery(ies) still running" in r.getMessage() for r in caplog.records) == 1


async def test_exponential_histograms_and_summaries_are_stored(caplog: pytest.LogCaptureFixture) -> None:
    # Before: iter_metrics skipped both with a bare `continue`, and our own SDK sends exponentialHistogram.
    metrics = [
        {"name": "dec05.exp", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
            {"count": "3", "sum": 12.5, "min": 1.5, "max": 8, "scale": 2, "zeroCount": "1",
             "positive": {"offset": -1, "bucketCounts": ["1", "2"]}}]}},
        {"name": "dec05.summary", "summary": {"dataPoints": [
            {"count": "3", "sum": 12.5, "quantileValues": [{"quantile": 0.99, "value": 9.0}]}]}},
        {"name": "dec05.nothing"},  # no data kind: counted, not stored
    ]
    frame = b"MTRC" + json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]}).encode()
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        with caplog.at_level(logging.WARNING, "iii_engine.modules.observability"):
            await send(worker, frame)

            async def ingested() -> bool:
                return bool((await telemetry(worker))["ingested_frames"] == 1)

            await eventually(ingested, within=5)
        listed = await worker.result("engine::metrics::list", {})
        stored = {m["name"]: m for m in listed["sdk_metrics"]}
        assert sorted(stored) == ["dec05.exp", "dec05.summary"]
        [exp] = stored["dec05.exp"]["data_points"]
        assert stored["dec05.exp"]["metric_type"] == "exponential_histogram"
        assert (exp["count"], exp["sum"], exp["min"], exp["max"], exp["scale"], exp["zero_count"]) == (
            3, 12.5, 1.5, 8.0, 2, 1)
        assert (exp["positive_offset"], exp["positive_bucket_counts"], exp["negative_bucket_counts"]) == (
            -1, [1, 2], [])
        [summary] = stored["dec05.summary"]["data_points"]
        assert stored["dec05.summary"]["metric_type"] == "summary"
        assert (summary["count"], summary["sum"], summary["quantile_values"]) == (
            3, 12.5, [{"quantile": 0.99, "value": 9.0}])
        assert (await telemetry(worker))["dropped_entries"] == 1
        assert sum("no data kind" in r.getMessage() for r in caplog.records) == 1


async def test_the_console_echo_of_log_records_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    # Before: every record of a worker's LOGS frames was one engine log line (312,011 lines in 15 s from one worker).
    records = [{"body": {"stringValue": f"dec05 echo {i}"}, "severityNumber": 9} for i in range(300)]
    frame = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()
    engine = engine_with({"logs_max_count": 1000})  # logs_console_output: true by default
    await engine.start()
    module: Any = engine.module("observability")
    with caplog.at_level(logging.INFO, "iii_engine.modules.observability"):
        module.ingest("LOGS", frame)
        await until(lambda: module.ingested_frames == 1)
        await engine.stop()  # logs the count the interval had not logged yet
    lines = [r.getMessage() for r in caplog.records]
    echoed = [line for line in lines if line.startswith("[unknown] dec05 echo")]
    assert len(echoed) == 100  # ECHO_LOG_BURST a second
    counted = [line for line in lines if "not echoed" in line]
    assert counted and sum(int(line.split("logs_console_output: ")[1].split()[0]) for line in counted) == 200
    assert len(counted) <= 2 and len(module.logs) == 300  # every record stored all the same


async def test_engine_log_checks_trace_and_span_ids() -> None:
    # Before: any text was stored and exported as the record's traceId/spanId (a collector may refuse the batch).
    async with engine_with({"logs_console_output": False}) as engine, ModuleWorker(engine.url) as worker:
        for field, bad in (("trace_id", "not-hex"), ("span_id", "ab" * 9), ("trace_id", 5)):
            answer = await worker.call("engine::log::info", {"message": "dec05 bad id", field: bad})
            assert answer["error"]["code"] == "deserialization_error" and field in answer["error"]["message"]
        await worker.result("engine::log::info", {"message": "dec05 good", "trace_id": "AB" * 16,
                                                  "span_id": "0" * 16})
        [entry] = (await worker.result("engine::logs::list", {}))["logs"]
        assert (entry["body"], entry["trace_id"], entry["span_id"]) == ("dec05 good", "ab" * 16, None)
