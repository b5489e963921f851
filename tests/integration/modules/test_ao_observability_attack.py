"""Attacks on the observability module through a real engine: hostile telemetry frames from a worker must neither
stop ingestion for everyone nor poison the ``engine::*`` queries, and alert webhooks stay bounded in time and count.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.test_observability import engine_with, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")


def metric_frame(name: str, point: dict[str, Any]) -> bytes:
    frame = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": name, "gauge": {"dataPoints": [point]}}]}]}]}
    return b"MTRC" + json.dumps(frame).encode()


def log_frame(body: str) -> bytes:
    record = {"body": {"stringValue": body}, "severityNumber": 9, "severityText": "INFO"}
    return b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()


async def send(worker: ModuleWorker, frame: bytes) -> None:
    assert worker._ws is not None
    await worker._ws.send(frame)


async def telemetry(worker: ModuleWorker) -> dict[str, Any]:
    health = await worker.result("engine::health::check", {})
    details: dict[str, Any] = health["components"]["telemetry"]["details"]
    return details


async def test_a_huge_integer_does_not_stop_ingestion() -> None:
    # Before: float(int("9" * 400)) raised OverflowError, which the ingest task did not catch: it ended, and every
    # later frame of every worker waited in the queue until it was full.
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, metric_frame("ao.huge", {"asInt": "9" * 400}))
        await send(worker, metric_frame("ao.huge", {"asInt": str(2**63)}))  # one past int64
        await send(worker, log_frame("ao after the huge one"))

        async def stored() -> bool:
            found = await worker.result("engine::logs::list", {})
            return any(entry["body"] == "ao after the huge one" for entry in found["logs"])

        assert await eventually(stored, within=5)
        details = await telemetry(worker)
        assert details["malformed_frames"] == 2 and details["ingested_frames"] == 1
        assert (await worker.result("engine::metrics::list", {"metric_name": "ao.huge"}))["sdk_metrics"] == []


async def test_a_huge_span_time_does_not_poison_the_queries() -> None:
    # Before: the span was stored with its 30-digit end time, and every engine::traces::list and
    # engine::metrics::list (which compute durations as floats) failed with OverflowError, for every caller.
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as worker:
        span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "ao-huge", "startTimeUnixNano": "1",
                "endTimeUnixNano": 10**30}
        good = {**span, "spanId": "ef" * 8, "name": "ao-good", "endTimeUnixNano": "2000000"}
        for one in (span, good):
            await send(worker, b"OTLP" + json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [one]}]}]}).encode())

        async def both_handled() -> bool:
            details = await telemetry(worker)
            return bool(details["ingested_frames"] + details["malformed_frames"] == 2)

        assert await eventually(both_handled, within=5)
        assert (await telemetry(worker))["malformed_frames"] == 1
        listed = await worker.result("engine::traces::list", {})
        assert [s["name"] for s in listed["spans"]] == ["ao-good"]
        performance = (await worker.result("engine::metrics::list", {}))["engine_metrics"]["performance"]
        assert performance["max_duration_ms"] >= 1.999


async def test_non_finite_metric_values_do_not_poison_metrics_list() -> None:
    # Before: asDouble "NaN" / "Infinity" (valid protobuf JSON) were stored as floats, and every
    # engine::metrics::list then failed to serialise its answer ("NaN and Infinity are not valid JSON").
    rules = [{"name": "ao-high", "metric": "ao.temp", "threshold": 10, "cooldown_seconds": 3600}]
    async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
        for raw in ("NaN", "Infinity", "-Infinity", "1e400", 42.0):
            await send(worker, metric_frame("ao.temp", {"asDouble": raw}))
        await send(worker, metric_frame("ao.temp", {"asDouble": "warm"}))  # not a number: refused, named

        async def all_handled() -> dict[str, Any] | None:
            details = await telemetry(worker)
            return details if details["ingested_frames"] + details["malformed_frames"] == 6 else None

        details = await eventually(all_handled, within=5)
        assert details["ingested_frames"] == 5 and details["malformed_frames"] == 1
        now_ms = time.time_ns() // 1_000_000
        listed = await worker.result("engine::metrics::list", {"metric_name": "ao.temp", "start_time": 0,
                                                                "end_time": now_ms + 60_000,
                                                                "aggregate_interval": 3600})
        assert [m["data_points"][0]["value"] for m in listed["sdk_metrics"]] == [None, None, None, None, 42.0]
        [bucket] = listed["aggregated_metrics"]
        assert bucket["count"] == 1 and bucket["max"] == 42.0
        evaluated = await worker.result("engine::alerts::evaluate", {})
        assert [e["value"] for e in evaluated["triggered_alerts"]] == [42.0]
