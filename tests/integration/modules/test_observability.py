"""The observability module in a real engine: what workers (ours and the reference SDK) send comes back through
the ``engine::*`` functions, a three-hop call is one trace tree, alerts fire, the ``log`` trigger fires, telemetry
is exported to an OTLP collector, and a flood of telemetry is bounded."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from tests.integration.engine.raw import RawWorker, disconnect
from tests.interop.refsdk import sdk_env
from tests.otlp_collector import OtlpCollector
from tests.polling import until
from tests.services import reference_python

pytestmark = pytest.mark.our_engine("configures the observability module")

OTEL = "modules::observability::OtelModule"
WORKER = Path(__file__).resolve().parents[2] / "fixtures" / "otel_worker.py"
ROOT = Path(__file__).resolve().parents[3]


def engine_with(settings: dict[str, Any]) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, settings)]))


async def eventually(probe: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Ask ``probe`` until it returns something truthy: telemetry is ingested by a background task."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def run_worker(python: str, url: str, tag: str) -> dict[str, Any]:
    env = {**sdk_env(), "OTEL_ENABLED": "true", "OTEL_BSP_SCHEDULE_DELAY": "50", "PYTHONPATH": str(ROOT)}
    if python != sys.executable:
        env.pop("PYTHONPATH")
    proc = await asyncio.create_subprocess_exec(python, "-P", str(WORKER), url, tag, env=env, cwd=str(WORKER.parent),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    line = [text for text in out.decode().splitlines() if text.startswith("{")][-1]
    report: dict[str, Any] = json.loads(line)
    return report


def names(node: dict[str, Any]) -> list[str]:
    return [node["name"], *(name for child in node["children"] for name in names(child))]


@pytest.mark.parametrize("sdk", ["ours", pytest.param("reference", marks=pytest.mark.interop)])
async def test_worker_logs_spans_and_metrics_come_back(sdk: str) -> None:
    python = sys.executable if sdk == "ours" else reference_python()
    tag = f"obs{uuid.uuid4().hex[:6]}"
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as probe:
        report = await run_worker(python, engine.url, tag)
        assert report["result"] == {"c": 2}
        trace_id = report["trace_id"]

        async def logged() -> list[dict[str, Any]]:
            found = await probe.result("engine::logs::list", {"trace_id": trace_id})
            return [entry for entry in found["logs"] if entry["body"] == f"{tag} c ran"]

        entry = (await eventually(logged))[0]
        assert entry["service_name"] == f"{tag}-svc"
        assert entry["resource"]["service.name"] == f"{tag}-svc"
        assert entry["severity_text"] == "INFO" and entry["severity_number"] == 9
        assert len(entry["span_id"]) == 16 and entry["trace_id"] == trace_id

        async def whole_tree() -> dict[str, Any] | None:
            tree = await probe.result("engine::traces::tree", {"trace_id": trace_id})
            if len(tree["roots"]) == 1 and all(f"call {tag}::{hop}" in names(tree["roots"][0]) for hop in "abc"):
                # the worker's handler span of c must sit somewhere below the engine's call to c
                return tree if len(names(tree["roots"][0])) >= 7 else None
            return None

        tree = await eventually(whole_tree)
        root = tree["roots"][0]
        assert root["name"] == f"{tag} root" and root["parent_span_id"] is None
        # the log record's span is one of the trace's spans
        assert entry["span_id"] in {s["span_id"] for s in _walk(root)}
        listed = await probe.result("engine::traces::list", {"trace_id": trace_id})
        assert [s["span_id"] for s in listed["spans"]] == [root["span_id"]] and listed["total"] == 1

        async def counted() -> list[dict[str, Any]]:
            found = await probe.result("engine::metrics::list", {"metric_name": f"{tag}.jobs"})
            return [m for m in found["sdk_metrics"] if m["data_points"] and m["data_points"][0]["value"] == 3]

        metric = (await eventually(counted))[0]
        assert metric["metric_type"] == "counter" and metric["service_name"] == f"{tag}-svc"
        invocations = (await probe.result("engine::metrics::list", {}))["engine_metrics"]["invocations"]
        assert invocations["by_function"][f"{tag}::c"] == 1 and invocations["deferred"] >= 3


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(span for child in node["children"] for span in _walk(child))]


async def test_engine_log_functions_filters_and_log_trigger() -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        async def on_warn(data: Any) -> None:
            await got.put(data)

        await worker.function("on::warn", on_warn)
        await worker.trigger("t-warn", "log", "on::warn", {"level": "warn"})
        await worker.result("engine::log::info", {"message": "hello", "data": {"k": 1}, "service_name": "svc"})
        await worker.result("engine::log::warn", {"message": "careful", "trace_id": "ab" * 16})
        fired = await asyncio.wait_for(got.get(), 5)
        assert fired["body"] == "careful" and fired["severity_text"] == "WARN"
        assert set(fired) >= {"instrumentation_scope_name", "resource", "observed_timestamp_unix_nano"}
        listed = await worker.result("engine::logs::list", {})
        assert [e["body"] for e in listed["logs"]] == ["careful", "hello"] and listed["total"] == 2
        assert listed["logs"][1]["attributes"] == {"k": 1} and listed["logs"][1]["service_name"] == "svc"
        only = await worker.result("engine::logs::list", {"severity_min": 13})
        assert [e["body"] for e in only["logs"]] == ["careful"]
        paged = await worker.result("engine::logs::list", {"offset": 1, "limit": 1})
        assert [e["body"] for e in paged["logs"]] == ["hello"] and paged["total"] == 2
        missing = await worker.call("engine::log::info", {"data": 1})
        assert missing["error"]["code"] == "deserialization_error" and "message" in missing["error"]["message"]
        no_spans = await worker.call("engine::traces::list", {})
        assert no_spans["error"]["code"] == "memory_exporter_not_enabled"
        assert (await worker.result("engine::logs::clear", {})) == {"success": True}
        assert (await worker.result("engine::logs::list", {}))["total"] == 0
        assert got.empty()  # the info entry did not fire the warn trigger


async def test_alert_fires_on_threshold_and_calls_its_function() -> None:
    rules = [{"name": "busy", "metric": "iii.invocations.total", "threshold": 3, "operator": ">=",
              "cooldown_seconds": 3600, "action": {"type": "function", "path": "alert::sink"}},
             {"name": "never", "metric": "no.such.metric", "threshold": 1}]
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
        async def sink(data: Any) -> None:
            await got.put(data)

        await worker.function("alert::sink", sink)
        for _ in range(3):
            await worker.result("engine::sampling::rules", {})
        evaluated = await worker.result("engine::alerts::evaluate", {})
        assert evaluated["evaluated"] is True
        assert [(e["name"], e["operator"], e["firing"]) for e in evaluated["triggered_alerts"]] == [
            ("busy", "GreaterThanOrEqual", True)]
        event = await asyncio.wait_for(got.get(), 5)
        assert event["alert"] == "busy" and event["value"] >= 3 and event["firing"] is True
        again = await worker.result("engine::alerts::evaluate", {})
        assert again["triggered_alerts"] == []  # inside the cooldown
        states = await worker.result("engine::alerts::list", {})
        assert states["firing_count"] == 1 and [s["name"] for s in states["alerts"]] == ["busy"]


async def test_telemetry_flood_is_bounded_and_counted() -> None:
    settings = {"ingest_queue_frames": 8, "max_frame_bytes": 1024}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        module = engine.module("observability")
        assert module is not None
        assert worker._ws is not None
        record = {"body": {"stringValue": "x"}, "severityNumber": 9, "severityText": "INFO"}
        frame = b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()
        await worker._ws.send(b"LOGS{not json")                # malformed (first, while the queue has room)
        await worker._ws.send(b"LOGS" + b"x" * 4096)          # over max_frame_bytes
        for _ in range(500):
            await worker._ws.send(frame)
        started = time.monotonic()
        assert await worker.result("engine::sampling::rules", {})  # calls are still answered promptly
        assert time.monotonic() - started < 1.0

        async def settled() -> dict[str, Any] | None:
            health = await worker.result("engine::health::check", {})
            details = health["components"]["telemetry"]["details"]
            done = details["ingested_frames"] + details["dropped_frames"] + details["malformed_frames"]
            return details if done == 502 else None

        details = await eventually(settled)
        assert details["dropped_frames"] >= 1 and details["malformed_frames"] == 1
        logs = await worker.result("engine::health::check", {})
        assert logs["components"]["logs"]["details"]["stored_logs"] == details["ingested_frames"]


async def test_logs_and_spans_are_exported_to_an_otlp_collector(otlp_collector: OtlpCollector) -> None:
    settings = {"enabled": True, "exporter": "both", "logs_exporter": "otlp",
                "endpoint": otlp_collector.url, "logs_flush_interval_ms": 100}  # batches: 5 s default
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        await worker.result("engine::log::error", {"message": "exported"})
        await until(lambda: {"/v1/logs", "/v1/traces"} <= {path for path, _ in otlp_collector.requests}, within=5)
        record = otlp_collector.bodies("/v1/logs")[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
        assert record["body"] == {"stringValue": "exported"} and record["severityText"] == "ERROR"
        span = otlp_collector.bodies("/v1/traces")[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert span["name"].startswith("call engine::")
        # "both" also keeps spans in memory
        listed = await worker.result("engine::traces::list", {"include_internal": True})
        assert listed["total"] >= 1


async def test_bad_settings_stop_the_engine_start() -> None:
    with pytest.raises(ModuleStartError, match=f"{OTEL}.*config.exporter: must be 'memory', 'otlp' or 'both'"):
        async with engine_with({"exporter": "carrier-pigeon"}):
            pass
    with pytest.raises(ModuleStartError, match=r"config\.alerts\[0\]\.threshold: must be a number, got 'high'"):
        async with engine_with({"alerts": [{"name": "x", "metric": "m", "threshold": "high"}]}):
            pass


async def test_engine_metrics_count_the_workers_connected() -> None:
    # before: {"spawns": 0, "deaths": 0, "active": 0} whatever was connected
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, {})])) as engine:
        probe = await RawWorker.connect(engine.url)
        other = await RawWorker.connect(engine.url)
        await disconnect(engine, other)
        metrics = await probe.result_of("engine::metrics::list", {})
        assert metrics["engine_metrics"]["workers"] == {"spawns": 2, "deaths": 1, "active": 1}
        await probe.close()
