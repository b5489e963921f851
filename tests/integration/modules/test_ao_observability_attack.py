"""Attacks on the observability module through a real engine: hostile telemetry frames from a worker must neither
stop ingestion for everyone nor poison the ``engine::*`` queries, and alert webhooks stay bounded in time and count.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.observability import module as observability_module
from tests.integration.modules.hanging_webhook import hanging_webhook
from tests.integration.modules.test_observability import engine_with, eventually
from tests.polling import until

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


async def test_a_hanging_alert_webhook_is_bounded_in_count_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: every triggering evaluation started one more delivery to the hanging webhook (20 evaluations, 20
    # requests held open), and one delivery could last 4 attempts x 30 s plus pauses.
    monkeypatch.setattr(observability_module, "WEBHOOK_BUDGET_S", 1.0, raising=False)
    async with hanging_webhook() as hook:
        rules = [{"name": "ao-storm", "metric": "iii.invocations.total", "threshold": 0, "operator": ">=",
                  "cooldown_seconds": 0, "action": {"type": "webhook", "url": hook.url}}]
        async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
            module: Any = engine.module("observability")
            for _ in range(20):
                evaluated = await worker.result("engine::alerts::evaluate", {})
                assert [e["name"] for e in evaluated["triggered_alerts"]] == ["ao-storm"]
            await until(lambda: len(hook.arrived) >= 1)
            assert len(module._background) == 1  # one delivery in flight, not one per evaluation
            details = await telemetry(worker)
            # (the alert task's own first evaluation may have started the delivery: then all 20 were skipped)
            assert details["webhook_skipped"] >= 19
            # the delivery gives up within its budget, and the next event is delivered again
            await until(lambda: not module._background, within=5)
            assert (await telemetry(worker))["webhook_failed"] == 1 and len(hook.arrived) == 1
            hook.release.set()
            await worker.result("engine::alerts::evaluate", {})
            await until(lambda: module.webhook_sent == 1, within=5)


async def test_the_ingest_queue_is_bounded_in_bytes() -> None:
    # Before: only ingest_queue_frames (1024) x max_frame_bytes (8 MiB) bounded what waited, 8 GiB.
    async with engine_with({"ingest_queue_bytes": 100_000}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        frame = log_frame("ao " + "y" * 10_000)[4:]
        for _ in range(20):  # no await between: nothing is taken off the queue meanwhile
            module.ingest("LOGS", frame)
        assert module.dropped_frames == 20 - 100_000 // len(frame)

        async def all_stored() -> bool:
            details = await telemetry(worker)
            return bool(details["ingested_frames"] == 100_000 // len(frame))

        assert await eventually(all_stored, within=5)
        module.ingest("LOGS", frame)  # room again once ingested
        assert module.dropped_frames == 20 - 100_000 // len(frame)


async def test_a_flood_of_garbage_frames_is_not_a_flood_of_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # Before: one warning per malformed frame, so a worker could write the engine's log as fast as it sent.
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        for _ in range(200):
            await send(worker, b"LOGS{not json")

        async def all_refused() -> bool:
            return bool((await telemetry(worker))["malformed_frames"] == 200)

        assert await eventually(all_refused, within=5)
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert 1 <= len(lines) <= 2, len(lines)


async def test_the_stores_are_bounded_in_bytes() -> None:
    # Before: only counts bounded the stores, so 1000 logs (or spans) of a worker's largest frame each, 8 MiB,
    # stayed: 8 GiB. Now each store also keeps at most its *_max_bytes of JSON as received.
    settings = {"enabled": True, "exporter": "memory", "logs_max_bytes": 100_000, "memory_max_bytes": 100_000,
                "metrics_max_bytes": 100_000, "logs_console_output": False}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        big = "z" * 10_000
        span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "ao-" + big}
        spans_frame = b"OTLP" + json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
        for _ in range(30):
            await send(worker, log_frame(big))
            await send(worker, spans_frame)
            await send(worker, metric_frame("ao." + big, {"asDouble": 1.0}))
            await worker.result("engine::log::info", {"message": big, "data": {"more": big}})

        async def all_in() -> dict[str, Any] | None:
            health = await worker.result("engine::health::check", {})
            done = health["components"]["telemetry"]["details"]["ingested_frames"] == 90
            return health["components"] if done else None

        components = await eventually(all_in, within=10)
        assert components["logs"]["details"]["stored_logs"] <= 100_000 // 10_000
        assert components["metrics"]["details"]["stored_metrics"] <= 100_000 // 10_000
        # (the engine's own small call spans share the span store)
        assert (await worker.result("engine::traces::list", {"name": "ao-"}))["total"] <= 100_000 // 10_000
        for store in ("logs", "spans", "metrics"):
            details = components[store]["details"]
            assert details["stored_bytes"] <= 100_000 and details["evicted"] >= 20, (store, details)
        newest = (await worker.result("engine::logs::list", {"limit": 1}))["logs"][0]
        assert newest["body"] == big and newest["attributes"] == {"more": big}


async def test_metric_queries_refuse_bad_arguments_by_name() -> None:
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, metric_frame("ao.q", {"asDouble": 2.0}))

        async def stored() -> bool:
            return bool((await worker.result("engine::metrics::list", {"metric_name": "ao.q"}))["sdk_metrics"])

        assert await eventually(stored, within=5)
        # Before: an interval of 1e300 s overflowed to infinity and the call failed with an internal OverflowError.
        now_ms = time.time_ns() // 1_000_000
        listed = await worker.result("engine::metrics::list", {"start_time": 0, "end_time": now_ms + 60_000,
                                                                "aggregate_interval": 1e300})
        assert [(b["name"], b["count"]) for b in listed["aggregated_metrics"]] == [("ao.q", 1)]
        # Before: a number as metric_name silently matched nothing, and any JSON given as level was echoed back.
        for function_id, data, named in (("engine::metrics::list", {"metric_name": 5}, "metric_name"),
                                         ("engine::metrics::list", {"start_time": "0"}, "start_time"),
                                         ("engine::rollups::list", {"level": {"x": [1] * 1000}}, "level"),
                                         ("engine::rollups::list", {"level": -1}, "level"),
                                         ("engine::rollups::list", {"metric_name": ["a"]}, "metric_name")):
            answer = await worker.call(function_id, data)
            assert answer["error"]["code"] == "deserialization_error", answer
            assert named in answer["error"]["message"], answer
        assert (await worker.result("engine::rollups::list", {"level": 2}))["level"] == 2


async def test_spans_sharing_one_id_do_not_hold_the_engine() -> None:
    # Before: engine::traces::tree over these spans built 2**256 nodes on the engine's event loop (see
    # tests/unit/engine/test_ao_trace_tree.py for the proof that does not hang the test run).
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as worker:
        shared = "ab" * 8
        spans = [{"traceId": "cd" * 16, "spanId": shared, "name": "root"}]
        spans += [{"traceId": "cd" * 16, "spanId": shared, "parentSpanId": shared, "name": f"s{i}"} for i in range(3)]
        await send(worker, b"OTLP" + json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode())

        async def stored() -> bool:
            return bool((await telemetry(worker))["ingested_frames"] == 1)

        assert await eventually(stored, within=5)
        tree = await asyncio.wait_for(worker.result("engine::traces::tree", {"trace_id": "cd" * 16}), 10)
        [root] = tree["roots"]
        names = [root["name"]]
        level = root["children"]
        while level:
            names += [n["name"] for n in level]
            level = [c for n in level for c in n["children"]]
        assert sorted(names) == ["root", "s0", "s1", "s2"]
        assert await worker.result("engine::sampling::rules", {})  # the engine still answers


async def test_a_frame_of_many_tiny_records_is_cut_and_counted() -> None:
    # Before: every record of a frame was converted: 1.2 MB of "{}" records (300,000 entries) held the engine's
    # event loop for over a second and 180 MB, 8 MiB about 9 s and over a gigabyte, to keep the last 1000.
    async with engine_with({"max_frame_entries": 500, "logs_console_output": False}) as engine, \
            ModuleWorker(engine.url) as worker:
        many = b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * 300_000}]}]}).encode()
        await send(worker, many)

        async def handled() -> dict[str, Any] | None:
            details = await telemetry(worker)
            return details if details["ingested_frames"] == 1 else None

        details = await eventually(handled, within=10)
        health = await worker.result("engine::health::check", {})
        assert health["components"]["logs"]["details"]["stored_logs"] == 500
        assert details["dropped_entries"] == 300_000 - 500


async def test_a_frame_of_many_tiny_items_is_cut_and_counted() -> None:
    # Before: converting a frame cost per item, whatever the bytes: 6 MB of spans holding 1000 empty events each
    # took 8.5 s on the engine's event loop. Now max_frame_items bounds the items converted per frame.
    settings = {"enabled": True, "exporter": "memory", "max_frame_items": 5000}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        span = {"traceId": "ef" * 16, "spanId": "12" * 8, "name": "ao-events", "events": [{}] * 1000}
        await send(worker, b"OTLP" + json.dumps(
            {"resourceSpans": [{"scopeSpans": [{"spans": [span] * 300}]}]}).encode())

        async def handled() -> dict[str, Any] | None:
            details = await telemetry(worker)
            return details if details["ingested_frames"] == 1 else None

        details = await eventually(handled, within=10)
        stored = [s for s in module.spans.entries() if s["name"] == "ao-events"]
        assert len(stored) == 300
        kept = sum(len(s["events"]) for s in stored)
        assert kept == 5000 - 2  # the resource and scope entries took two items of the budget
        assert details["dropped_items"] == 300 * 1000 - kept
