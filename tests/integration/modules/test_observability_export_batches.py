"""The engine's own spans and log entries reach an OTLP collector in batches, not one request each."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.test_observability import engine_with
from tests.otlp_collector import OtlpCollector
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the observability module")


def records(collector: OtlpCollector) -> dict[str, list[int]]:
    """Records per request, by path."""
    return {"/v1/logs": [len(s["logRecords"]) for body in collector.bodies("/v1/logs")
                         for r in body["resourceLogs"] for s in r["scopeLogs"]],
            "/v1/traces": [len(s["spans"]) for body in collector.bodies("/v1/traces")
                           for r in body["resourceSpans"] for s in r["scopeSpans"]]}


async def test_engine_logs_and_spans_are_exported_in_batches(otlp_collector: OtlpCollector) -> None:
    # Before: one request per engine::log entry and per call span (120 calls, 120 + 120 requests); against a
    # collector answering at once the attack exported 3,265 and dropped 74,049 in 10 s.
    settings = {"enabled": True, "exporter": "otlp", "logs_exporter": "otlp", "endpoint": otlp_collector.url,
                "logs_batch_size": 50, "logs_flush_interval_ms": 100, "logs_console_output": False}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        await asyncio.gather(*(worker.result("engine::log::info", {"message": f"m{i}"}) for i in range(120)))
        await until(lambda: sum(records(otlp_collector)["/v1/logs"]) == 120
                    and sum(records(otlp_collector)["/v1/traces"]) >= 120, within=5)
        got = records(otlp_collector)
        assert len(got["/v1/logs"]) <= 3 and max(got["/v1/logs"]) == 50, got["/v1/logs"]
        assert len(got["/v1/traces"]) <= 3, got["/v1/traces"]
        health = await worker.result("engine::health::check", {})
        details = health["components"]["telemetry"]["details"]
        assert details["exported_records"] >= 240 and details["export_dropped_records"] == 0


async def test_a_batch_still_gathering_is_sent_at_stop(otlp_collector: OtlpCollector) -> None:
    settings = {"enabled": True, "exporter": "memory", "logs_exporter": "otlp", "endpoint": otlp_collector.url,
                "logs_flush_interval_ms": 3_600_000, "logs_console_output": False}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        await worker.result("engine::log::warn", {"message": "last words"})
        assert records(otlp_collector)["/v1/logs"] == []  # gathered: neither full nor due
    assert records(otlp_collector)["/v1/logs"] == [1]


async def test_a_failed_export_counts_the_records_it_held(otlp_collector: OtlpCollector) -> None:
    # Before: a request the collector refused counted 1 in export_failed, whatever it held (here 20 + 7 records
    # lost, one line saying "(3 failed so far)"), and a worker's frame was exported before it was checked.
    otlp_collector.status = 500
    settings = {"enabled": True, "exporter": "memory", "logs_exporter": "otlp", "endpoint": otlp_collector.url,
                "logs_batch_size": 10, "logs_flush_interval_ms": 60_000, "logs_console_output": False}
    records = [{"body": {"stringValue": f"w{i}"}} for i in range(7)]
    frame = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        await asyncio.gather(*(worker.result("engine::log::info", {"message": f"m{i}"}) for i in range(20)))
        assert worker._ws is not None
        await worker._ws.send(b"LOGS" + frame)
        await worker._ws.send(b"LOGSnull")  # refused as malformed: not exported
        await until(lambda: module.ingested_frames + module.malformed_frames == 2)
        await until(lambda: module.forwarder.failed == 3)
        details = (await worker.result("engine::health::check", {}))["components"]["telemetry"]["details"]
    assert (details["export_failed"], details["export_failed_records"]) == (3, 27)
    assert (details["exported_records"], details["export_dropped_records"]) == (0, 0)
    assert frame in [body for _, body in otlp_collector.requests]  # the worker's frame, as it came
    assert [path for path, _ in otlp_collector.requests] == ["/v1/logs"] * 3
