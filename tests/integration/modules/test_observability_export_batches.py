"""The engine's own spans and log entries reach an OTLP collector in batches, not one request each."""

from __future__ import annotations

import asyncio

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
