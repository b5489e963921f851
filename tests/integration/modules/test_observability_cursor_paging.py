"""Paging the observability lists with ``cursor: next_cursor`` is exact while the store changes: no entry still stored
when the walk reaches its place is skipped, none is listed twice. Offsets (``next_offset``) shift under writes and
evictions: the attack report's walk skipped 1,000 metrics still stored (200 new and 200 evicted between pages of
500) and listed 700 logs twice (100 new between pages of 500, newest first). And ``aggregate_interval: 10**400``
answered internal_error OverflowError with a stack trace."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.modules.test_ao_observability_attack import send
from tests.integration.modules.test_observability import OTEL, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")

_T0 = 1_700_000_000_000_000_000


def engine_with(settings: dict[str, Any]) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, {
        "enabled": True, "exporter": "memory", "logs_max_bytes": 1 << 30, "metrics_max_bytes": 1 << 30, **settings})]))


def metrics_frame(numbers: range) -> bytes:
    metrics = [{"name": f"n{i}", "gauge": {"dataPoints": [{"asDouble": 1.0}]}} for i in numbers]
    return b"MTRC" + json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]}).encode()


def logs_frame(numbers: range) -> bytes:
    # Three records share each timestamp: the cursor must order ties as the offsets do (the newest first).
    records = [{"timeUnixNano": str(_T0 + i // 3), "severityNumber": 9, "body": {"stringValue": f"m{i}"}}
               for i in numbers]
    return b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()


def spans_frame(numbers: range) -> bytes:
    spans = [{"traceId": f"{i:032x}", "spanId": f"{i + 1:016x}", "name": f"s{i % 7}",
              "startTimeUnixNano": str(_T0 + i), "endTimeUnixNano": str(_T0 + i + (i * 7919) % 1000)}
             for i in numbers]
    return b"OTLP" + json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


async def ingested(worker: ModuleWorker, signal: str, key: str, count: int) -> None:
    """Wait until the store's ``key`` detail (``stored_*`` or ``evicted``) reaches ``count``."""
    async def reached() -> bool:
        health = await worker.result("engine::health::check", {})
        return bool(health["components"][signal]["details"][key] >= count)

    assert await eventually(reached, within=10)


async def test_metrics_cursor_pages_skip_nothing_while_the_oldest_are_evicted() -> None:
    # Before (next_offset, the report's walk): 1,000 of these entries skipped though still stored when passed.
    async with engine_with({"metrics_max_count": 3000}) as engine, ModuleWorker(engine.url) as worker:
        for start in range(0, 3000, 500):
            await send(worker, metrics_frame(range(start, start + 500)))
        await ingested(worker, "metrics", "stored_metrics", 3000)
        got: list[int] = []
        sent, evicted, cursor, pages = 3000, 0, None, 0
        while pages < 40:
            answer = await worker.result("engine::metrics::list", {"limit": 500} | ({"cursor": cursor} if cursor
                                                                                     else {}))
            got += [int(entry["name"][1:]) for entry in answer["sdk_metrics"]]
            cursor, pages = answer["next_cursor"], pages + 1
            if cursor is None:
                break
            assert answer["next_offset"] is not None
            await send(worker, metrics_frame(range(sent, sent + 200)))
            sent, evicted = sent + 200, evicted + 200
            await ingested(worker, "metrics", "evicted", evicted)
        assert evicted >= 1600  # the oldest went while the walk was on
        assert got == list(range(sent)), (len(got), len(set(got)))  # none skipped, none twice, oldest first


async def test_logs_cursor_pages_repeat_nothing_while_newer_logs_arrive() -> None:
    # Before (next_offset, the report's walk): 700 entries listed twice.
    async with engine_with({"logs_max_count": 100_000}) as engine, ModuleWorker(engine.url) as worker:
        for start in range(0, 3000, 500):
            await send(worker, logs_frame(range(start, start + 500)))
        await ingested(worker, "logs", "stored_logs", 3000)
        first = await worker.result("engine::logs::list", {"limit": 500})
        got = [int(entry["body"][1:]) for entry in first["logs"]]
        cursor, sent, pages = first["next_cursor"], 3000, 1
        while cursor is not None and pages < 40:
            await send(worker, logs_frame(range(sent, sent + 100)))
            sent += 100
            await ingested(worker, "logs", "stored_logs", sent)
            answer = await worker.result("engine::logs::list", {"cursor": cursor, "limit": 500})
            assert answer["total"] == sent and answer["query"]["cursor"] == cursor
            got += [int(entry["body"][1:]) for entry in answer["logs"]]
            cursor, pages = answer["next_cursor"], pages + 1
        repeated = sum(1 for count in Counter(got).values() if count > 1)
        assert repeated == 0 and got == list(range(2999, -1, -1)), (repeated, len(got))
        # The offset a cursor page gives is where the next page starts now: the same entries either way.
        by_cursor = await worker.result("engine::logs::list", {"limit": 7, "cursor": first["next_cursor"]})
        by_offset = await worker.result("engine::logs::list", {"limit": 7, "offset": by_cursor["next_offset"] - 7})
        assert by_offset["logs"] == by_cursor["logs"] and by_offset["next_cursor"] == by_cursor["next_cursor"]


async def test_traces_cursor_pages_follow_the_sort_while_spans_are_evicted() -> None:
    # Room for the spans of the engine's own calls too (each list call stores one; they are not listed).
    async with engine_with({"memory_max_spans": 2000}) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, spans_frame(range(1000)))
        await ingested(worker, "spans", "stored_spans", 1000)
        for sort in ({"sort_by": "duration", "sort_order": "desc"}, {"sort_by": "name"}, {}):
            names, cursor, pages = [], None, 0
            while pages < 40:
                answer = await worker.result("engine::traces::list", {"limit": 150, **sort} | (
                    {"cursor": cursor} if cursor else {}))
                names += [span["trace_id"] for span in answer["spans"]]
                cursor, pages = answer["next_cursor"], pages + 1
                if cursor is None:
                    break
            assert len(names) == len(set(names)) == 1000, sort
            whole = []
            for offset in range(0, 1000, 500):
                whole += [s["trace_id"] for s in (await worker.result(
                    "engine::traces::list", {"limit": 500, "offset": offset, **sort}))["spans"]]
            assert names == whole, sort  # the order offsets give over an unchanged store
        # Spans the walk has not reached yet are evicted (the 400 oldest and one per call since), newer ones come:
        # the walk goes on from the oldest still stored past its cursor (with next_offset: 300 more skipped).
        first = await worker.result("engine::traces::list", {"limit": 300})
        assert [int(s["trace_id"], 16) for s in first["spans"]] == list(range(300))
        await send(worker, spans_frame(range(1000, 2400)))
        await ingested(worker, "spans", "evicted", 400)
        rest = [int(s["trace_id"], 16) for s in (await worker.result(
            "engine::traces::list", {"limit": 10_000, "cursor": first["next_cursor"]}))["spans"]]
        assert 400 <= rest[0] < 450 and rest == list(range(rest[0], 2400)), rest[:3]


async def test_a_cursor_is_refused_by_name_when_it_is_not_one_this_list_gave() -> None:
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, logs_frame(range(3)))
        await ingested(worker, "logs", "stored_logs", 3)
        logs_cursor = (await worker.result("engine::logs::list", {"limit": 1}))["next_cursor"]
        assert isinstance(logs_cursor, str)
        for function_id, data in (("engine::metrics::list", {"cursor": logs_cursor}),
                                  ("engine::traces::list", {"cursor": logs_cursor}),
                                  ("engine::logs::list", {"cursor": "logs:x:1"}),
                                  ("engine::logs::list", {"cursor": 5}),
                                  ("engine::logs::list", {"cursor": logs_cursor, "offset": 1})):
            answer = await worker.call(function_id, data)
            assert answer["error"]["code"] == "deserialization_error", answer
            assert "cursor" in answer["error"]["message"], answer


async def test_a_huge_aggregate_interval_is_one_bucket() -> None:
    # Before: internal_error OverflowError('int too large to convert to float') with a stack trace.
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, metrics_frame(range(2)))
        await ingested(worker, "metrics", "stored_metrics", 2)
        now_ms = time.time_ns() // 1_000_000
        answer = await worker.call("engine::metrics::list", {"start_time": 0, "end_time": now_ms + 60_000,
                                                             "aggregate_interval": 10**400})
        assert "error" not in answer, answer
        buckets = answer["result"]["aggregated_metrics"]
        assert [(b["name"], b["count"], b["bucket_start_ns"]) for b in buckets] == [("n0", 1, 0), ("n1", 1, 0)]


async def test_a_cursor_of_an_earlier_run_of_the_store_is_refused_not_an_empty_end() -> None:
    # Before: a cursor from before a restart ("metrics:899:") answered 0 entries and next_cursor null with 500
    # stored: a client took the walk for done and never saw them; a made-up number did the same.
    async with engine_with({}) as first, ModuleWorker(first.url) as worker:
        await send(worker, metrics_frame(range(1000)))
        await ingested(worker, "metrics", "stored_metrics", 1000)
        page = await worker.result("engine::metrics::list", {"limit": 900})
        cursor = page["next_cursor"]
        assert cursor is not None
    async with engine_with({}) as restarted, ModuleWorker(restarted.url) as worker:
        await send(worker, metrics_frame(range(500)))
        await ingested(worker, "metrics", "stored_metrics", 500)
        for stale in (cursor, cursor.replace("899.", "99999999.")):
            frame = await worker.call("engine::metrics::list", {"cursor": stale})
            assert frame["error"]["code"] == "cursor_expired", frame
            assert "list again without it" in frame["error"]["message"]
        own = (await worker.result("engine::metrics::list", {"limit": 10}))["next_cursor"]
        name, numbered, key = own.split(":")
        forged = f"{name}:{10**9}.{numbered.partition('.')[2]}:{key}"  # this run's, a number it never gave
        assert (await worker.call("engine::metrics::list", {"cursor": forged}))["error"]["code"] == "cursor_expired"
        assert len((await worker.result("engine::metrics::list", {}))["sdk_metrics"]) == 500
