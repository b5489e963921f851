"""Mends of a re-attack on the observability module (/tmp/atkE): a trace tree of spans sharing one span id that
took 32 s of CPU, and the per-worker ingest share that dropped an SDK's flushed batch into an idle queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.observability import queries
from tests.integration.modules.test_observability import engine_with
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the observability module")


def _tree_work(monkeypatch: pytest.MonkeyPatch, spans: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """The tree of ``spans`` and how many span identities the builder looked at (its ``id()`` calls)."""
    calls = 0

    def counted_id(obj: object) -> int:
        nonlocal calls
        calls += 1
        return id(obj)

    monkeypatch.setattr(queries, "id", counted_id, raising=False)
    tree = queries._run(queries.building_tree(spans, None))
    monkeypatch.undo()
    return tree, calls


def _count(nodes: list[dict[str, Any]]) -> int:
    return sum(1 + _count(node["children"]) for node in nodes)


def test_a_tree_of_spans_sharing_one_span_id_is_built_with_bounded_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: past the depth bound every popped span pushed each still unplaced span again: 500 spans of one id
    # (their own parent) took 15,078,009 id() calls (1,000 took 32 s of CPU); now ~240,000, the levels above the
    # bound listing the spans' shared children once each.
    n = 500
    same = [{"trace_id": "t", "span_id": "same", "parent_span_id": "same", "name": f"s{i}"} for i in range(n)]
    tree, work = _tree_work(monkeypatch, same)
    assert len(tree["roots"]) == 1 and tree["depth_cut"]
    assert _count(tree["roots"]) == queries.TREE_MAX_DEPTH + 1
    chain = [{"trace_id": "t", "span_id": str(i), "parent_span_id": str(i - 1) if i else None, "name": f"c{i}"}
             for i in range(n)]
    chained, baseline = _tree_work(monkeypatch, chain)
    assert chained["depth_cut"] and _count(chained["roots"]) == queries.TREE_MAX_DEPTH + 1
    # Each level above the bound may look at every span once or twice; nothing grows with n squared past it.
    assert work <= 2 * (queries.TREE_MAX_DEPTH + 1) * n + baseline, (work, baseline)


def _logs_frame(service: str, body: str) -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": [{"severityNumber": 9, "body": {"stringValue": body}}]}]}]}).encode()


async def test_a_burst_into_an_idle_ingest_queue_is_kept_though_many_workers_send() -> None:
    # Before: the share (ingest_queue_frames over the connections sending) held on an idle queue too: 21 sending
    # left 9 frames each, and a batch of 60 lost 51 with the queue at 80 of 200.
    async with engine_with({"ingest_queue_frames": 200, "logs_max_count": 10_000}) as engine, \
            ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        for i in range(20):  # no await: nothing is taken off the queue meanwhile
            module.ingest("LOGS", _logs_frame("ticker", f"t{i}"), f"w-ticker-{i}")
        for j in range(60):
            module.ingest("LOGS", _logs_frame("batch", f"b{j}"), "w-batch")
        await until(lambda: not module._queue.qsize() and not module._source_queued)
        kept = [entry["service_name"] for entry in module.logs.entries()]
        assert kept.count("batch") == 60 and kept.count("ticker") == 20
        assert (await worker.result("engine::health::check", {}))["components"]["telemetry"]["details"][
            "dropped_frames"] == 0
