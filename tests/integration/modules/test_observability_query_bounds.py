"""The observability module's list answers are bounded: a default and a largest ``limit``, paging through
``next_offset``, and never an answer over the engine's ``max_message_size`` (fewer entries, ``truncated: true``).
Before, ``engine::logs::list {}`` answered the whole store (a 66 MB frame) and ``engine::metrics::list`` every entry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.observability.queries import DEFAULT_LIMIT, MAX_LIMIT
from tests.integration.modules.test_ao_observability_attack import send, telemetry
from tests.integration.modules.test_observability import OTEL, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")


def engine_with(settings: dict[str, Any], max_message_size: int) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, max_message_size=max_message_size,
                                      modules=[ModuleSpec(OTEL, {"enabled": True, "exporter": "memory", **settings})]))


def logs_frame(bodies: list[str]) -> bytes:
    records = [{"timeUnixNano": str(1_700_000_000_000_000_000 + i), "severityNumber": 9, "severityText": "INFO",
                "body": {"stringValue": body}} for i, body in enumerate(bodies)]
    return b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()


async def stored(worker: ModuleWorker, signal: str, count: int) -> None:
    async def enough() -> bool:
        health = await worker.result("engine::health::check", {})
        return bool(health["components"][signal]["details"][f"stored_{signal}"] >= count)

    assert await eventually(enough, within=10)


def frame_size(frame: dict[str, Any]) -> int:
    return len(json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode())


async def test_logs_list_answers_fit_max_message_size_and_page_through_every_entry() -> None:
    # Before: one 209 KB answer with all 40 entries, over a max_message_size of 64 KiB.
    async with engine_with({}, 64 * 1024) as engine, ModuleWorker(engine.url) as worker:
        for i in range(40):
            await send(worker, logs_frame([f"{i:03d}" + "x" * 5000]))
        await stored(worker, "logs", 40)
        seen: list[str] = []
        offset: int | None = 0
        pages = 0
        while offset is not None:
            frame = await worker.call("engine::logs::list", {"offset": offset})
            assert frame_size(frame) <= 64 * 1024
            answer = frame["result"]
            assert answer["total"] == 40 and answer["oversized"] == 0
            assert answer["truncated"] is (answer["next_offset"] is not None)
            seen += [entry["body"][:3] for entry in answer["logs"]]
            offset = answer["next_offset"]
            pages += 1
        assert pages >= 4
        assert sorted(seen) == [f"{i:03d}" for i in range(40)] and len(set(seen)) == 40


async def test_logs_list_has_a_default_and_a_largest_limit() -> None:
    # Before: {} answered all 12,000 entries.
    async with engine_with({"logs_max_count": 20_000, "logs_max_bytes": 1 << 30}, 64 << 20) as engine, \
            ModuleWorker(engine.url) as worker:
        for part in range(2):
            await send(worker, logs_frame([f"log {part}-{i}" for i in range(6000)]))
        await stored(worker, "logs", 12_000)
        answer = await worker.result("engine::logs::list", {})
        assert len(answer["logs"]) == DEFAULT_LIMIT and answer["total"] == 12_000
        assert answer["next_offset"] == DEFAULT_LIMIT and answer["truncated"] is False
        answer = await worker.result("engine::logs::list", {"limit": 10**9})
        assert len(answer["logs"]) == MAX_LIMIT and answer["next_offset"] == MAX_LIMIT
        answer = await worker.result("engine::logs::list", {"offset": MAX_LIMIT, "limit": 10**9})
        assert len(answer["logs"]) == 2000 and answer["next_offset"] is None


async def test_metrics_list_is_paged() -> None:
    # Before: every stored entry (2,500 here; 10,000 by default, a 4.8 MB answer) and no paging.
    metrics = [{"name": f"q.m{i}", "gauge": {"dataPoints": [{"asDouble": float(i)}]}} for i in range(2500)]
    async with engine_with({}, 4 << 20) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, b"MTRC" + json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]})
                   .encode())
        await stored(worker, "metrics", 2500)
        answer = await worker.result("engine::metrics::list", {})
        assert len(answer["sdk_metrics"]) == DEFAULT_LIMIT and answer["total"] == 2500
        assert answer["next_offset"] == DEFAULT_LIMIT and "invocations" in answer["engine_metrics"]
        answer = await worker.result("engine::metrics::list", {"offset": 2000})
        assert [m["name"] for m in answer["sdk_metrics"]] == [f"q.m{i}" for i in range(2000, 2500)]
        assert answer["next_offset"] is None and answer["truncated"] is False
        named = await worker.result("engine::metrics::list", {"metric_name": "q.m7"})
        assert [m["name"] for m in named["sdk_metrics"]] == ["q.m7"] and named["total"] == 1


async def test_a_big_trace_tree_is_cut_to_max_message_size() -> None:
    # Before: the whole tree, a 131 KB answer over a max_message_size of 64 KiB.
    spans = [{"traceId": "ab" * 16, "spanId": f"{i + 1:016x}", "parentSpanId": f"{i:016x}" if i else None,
              "name": f"s{i}", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
              "attributes": [{"key": "blob", "value": {"stringValue": "v" * 3000}}]} for i in range(40)]
    async with engine_with({}, 64 * 1024) as engine, ModuleWorker(engine.url) as worker:
        for part in range(0, 40, 10):  # frames under max_message_size
            await send(worker, b"OTLP" + json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": spans[part:part + 10]}]}]}).encode())
        await stored(worker, "spans", 40)
        frame = await worker.call("engine::traces::tree", {"trace_id": "ab" * 16})
        assert frame_size(frame) <= 64 * 1024
        tree = frame["result"]
        assert tree["truncated"] is True and tree["roots"][0]["name"] == "s0"
        listed = await worker.result("engine::traces::list", {})
        assert [s["name"] for s in listed["spans"]] == ["s0"] and listed["truncated"] is False
        assert (await telemetry(worker))["malformed_frames"] == 0


async def test_a_tree_deeper_than_the_bound_says_truncated() -> None:
    # Before: a 300-span chain answered its first 257 spans with "truncated": false (the attack: 2,000 deep).
    spans = [{"traceId": "cd" * 16, "spanId": f"{i + 1:016x}", "parentSpanId": f"{i:016x}" if i else None,
              "name": f"s{i}", "startTimeUnixNano": "1", "endTimeUnixNano": "2"} for i in range(300)]
    async with engine_with({}, 4 << 20) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, b"OTLP" + json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode())
        await stored(worker, "spans", 300)
        tree = await worker.result("engine::traces::tree", {"trace_id": "cd" * 16})
        depth, node = 1, tree["roots"][0]
        while node["children"]:
            depth, node = depth + 1, node["children"][0]
        assert depth == 257 and tree["truncated"] is True
