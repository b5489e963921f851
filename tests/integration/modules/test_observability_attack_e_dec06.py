"""Mends of a re-attack on the observability module (/tmp/atkE): a trace tree of spans sharing one span id that
took 32 s of CPU, the per-worker ingest share that dropped an SDK's flushed batch into an idle queue, and metric
names past max_names that evicted other services' metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.observability import queries
from iii_engine.modules.observability.stores import MetricStore
from tests.integration.modules.test_observability import engine_with
from tests.integration.modules.test_observability_attack_c_dec06 import gauges_frame
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


def _metrics(names: list[str], service: str) -> list[dict[str, Any]]:
    return [{"name": name, "service_name": service, "timestamp_unix_nano": 1} for name in names]


async def test_made_up_metric_names_evict_the_flooders_own_entries_not_another_services() -> None:
    # Before: a new name past max_names evicted the oldest entries whoever sent them: 3 frames of 10,000 made-up
    # names evicted the one entry of victim.jobs (1 -> 0) and 20,001 in all.
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        module.ingest("MTRC", gauges_frame(["victim.jobs"], "victim"))
        for r in range(3):
            module.ingest("MTRC", gauges_frame([f"squat.{r}.{i}" for i in range(10_000)], "squatter"))
        await until(lambda: module.ingested_frames == 4, within=20)
        listed = await worker.result("engine::metrics::list", {"metric_name": "victim.jobs"})
        assert len(listed["sdk_metrics"]) == 1
        details = (await worker.result("engine::health::check", {}))["components"]["metrics"]["details"]
        assert details["evicted_for_names"] == 20_001 and details["stored_metrics"] == 10_000
        kept = await worker.result("engine::metrics::list", {"metric_name": "squat.2.9998"})
        assert len(kept["sdk_metrics"]) == 1
        gone = await worker.result("engine::metrics::list", {"metric_name": "squat.1.9998"})
        assert gone["sdk_metrics"] == []  # the squatter's oldest went


def test_a_lone_service_past_max_names_evicts_its_own_oldest() -> None:
    store = MetricStore(max_entries=100, max_names=3)
    store.add(_metrics(["a", "b", "a", "c", "d"], "only"))
    assert [m["name"] for m in store.entries()] == ["a", "c", "d"]  # the oldest two went for "d"
    assert store.evicted_for_names == 2 and len(store) == 3


def test_a_cursor_walks_past_entries_evicted_from_the_middle_for_names() -> None:
    # The entries kept no longer follow each other in number: a cursor must neither skip nor repeat one.
    store = MetricStore(max_entries=100, max_names=4)
    store.add(_metrics(["victim.jobs"], "victim"))
    store.add(_metrics(["f0", "f1", "f2", "f3", "f4"], "flood"))
    snapshot = store.snapshot()
    assert [m["name"] for m in snapshot.entries] == ["victim.jobs", "f2", "f3", "f4"]
    assert snapshot.seqs == [0, 3, 4, 5] and snapshot.end_seq == 6
    walked: list[str] = []
    cursor = None
    for _ in range(5):
        page = asyncio.run(queries.page_of(store.snapshot(), lambda e: True,
                                           queries.Paging(0, 2, queries.METRICS_ORDER, cursor)))
        walked += [m["name"] for m in page.entries]
        if not page.entries:
            break
        cursor = queries.Cursor(None, page.seqs[-1], snapshot.epoch)
    assert walked == ["victim.jobs", "f2", "f3", "f4"]


def test_entries_keep_their_numbers_after_the_dead_ones_are_compacted() -> None:
    # A compaction drops the entries evicted from the middle, not the gaps they leave: read as gapless, the entries
    # after a gap were numbered too high, and a cursor walk skipped them (one stored metric never listed).
    store = MetricStore(max_entries=100_000, max_names=10)
    numbers: dict[str, int] = {}

    def add(name: str, service: str) -> None:
        numbers[name] = store.next_seq
        store.add(_metrics([name], service))

    add("jobs", "app")
    for i in range(30):
        add(f"f{i}", "flood")
    add("queue_depth", "app2")
    for i in range(30, 300):
        add(f"f{i}", "flood")
        snapshot = store.snapshot()
        assert [snapshot.seq(at) for at in range(len(snapshot.entries))] == [
            numbers[entry["name"]] for entry in snapshot.entries], i


def test_names_are_charged_to_their_sender_not_to_the_service_it_names() -> None:
    # A service name is the sender's to choose: made-up names spread over as many made-up services made the real
    # service, holding the most names, the one evicted first (5 of 5 of its metrics gone). Charged to the sending
    # connection, the flooder's own go.
    store = MetricStore(max_entries=100_000, max_names=1_000)
    for name in ("a", "b", "c", "d", "e"):
        store.add(_metrics([f"app.{name}"], "app"), owner="w-app")
    for i in range(3_000):
        store.add(_metrics([f"made-up.{i}"], f"svc{i}"), owner="w-flood")
    assert [m["name"] for m in store.entries()][:5] == ["app.a", "app.b", "app.c", "app.d", "app.e"]
    assert store.evicted_for_names == 2_005  # all of them the flooder's own


async def test_the_engine_charges_metric_names_to_the_sending_worker() -> None:
    # the victim even claims the flooder's service name: its entries are still its own
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        module.ingest("MTRC", gauges_frame(["victim.jobs"], "squatter"), "w-victim")
        for r in range(2):
            module.ingest("MTRC", gauges_frame([f"squat.{r}.{i}" for i in range(10_000)], "squatter"), "w-flood")
        await until(lambda: module.ingested_frames == 3, within=20)
        listed = await worker.result("engine::metrics::list", {"metric_name": "victim.jobs"})
        assert len(listed["sdk_metrics"]) == 1
