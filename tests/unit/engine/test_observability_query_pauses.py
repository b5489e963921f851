"""A query over a large observability store lets the engine's other tasks run while it filters, sorts and encodes:
before, ``engine::logs::list`` and ``engine::traces::list`` ran in one step (300-500 ms of the event loop for a
66 MB answer), every other worker's call waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii.wire import loads
from iii_engine.modules.base import InvocationContext
from iii_engine.modules.observability import module as observability_module
from iii_engine.modules.observability import queries
from iii_engine.modules.observability.module import OtelModule

ENTRIES = 60_000


def _module() -> OtelModule:
    return OtelModule(None, {"enabled": True, "exporter": "memory", "logs_max_count": ENTRIES,  # type: ignore[arg-type]
                             "memory_max_spans": ENTRIES, "logs_max_bytes": 1 << 32, "memory_max_bytes": 1 << 32})


async def _ticks_during(call: Callable[[], Awaitable[Any]], ticks: list[int] | None = None) -> tuple[int, Any]:
    """(how many turns another task had while ``call()`` ran, its answer); ``ticks[0]`` counts them as they go."""
    ticks = [0] if ticks is None else ticks
    done = False

    async def ticker() -> None:
        while not done:
            ticks[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    ticks[0] = 0
    try:
        answer = await call()
    finally:
        done = True
        await task
    return ticks[0], answer


async def test_logs_list_over_a_large_store_pauses_for_other_tasks() -> None:
    module = _module()
    module.logs.add_all([{"timestamp_unix_nano": i, "severity_number": 9, "severity_text": "INFO", "trace_id": None,
                          "span_id": None, "body": f"b{i}"} for i in range(ENTRIES)], 100)
    ticks, answer = await _ticks_during(lambda: module._logs_list({"offset": 50_000, "limit": 5}, InvocationContext()))
    assert ticks >= 20  # before: 0
    answer = loads(answer.json)
    assert [e["body"] for e in answer["logs"]] == [f"b{i}" for i in range(9_999, 9_994, -1)]
    assert answer["total"] == ENTRIES and answer["next_offset"] == 50_005


async def test_traces_list_over_a_large_store_pauses_for_other_tasks() -> None:
    module = _module()
    assert module.spans is not None
    module.spans.add_all([{"trace_id": f"t{i}", "span_id": "s", "parent_span_id": None, "name": f"n{i}",
                           "start_time_unix_nano": i, "end_time_unix_nano": i + 1, "attributes": []}
                          for i in range(ENTRIES)], 100)
    ticks, answer = await _ticks_during(lambda: module._traces_list({"sort_order": "desc"}, InvocationContext()))
    assert ticks >= 20  # before: 0
    answer = loads(answer.json)
    assert [s["name"] for s in answer["spans"][:2]] == [f"n{ENTRIES - 1}", f"n{ENTRIES - 2}"]
    assert answer["total"] == ENTRIES and answer["limit"] == 100


async def test_traces_tree_pauses_for_other_tasks_while_it_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the tree was built in one step between the selection and the encoding (a tree of 100,000 spans held
    # the loop ~370 ms). Ticks counted from the selection's end to the encoding's start: the building alone.
    module = _module()
    assert module.spans is not None
    module.spans.add_all([{"trace_id": "t", "span_id": f"s{i}", "parent_span_id": "s0" if i else None,
                           "name": f"n{i}", "start_time_unix_nano": i, "end_time_unix_nano": i + 1, "attributes": []}
                          for i in range(5_000)], 100)
    monkeypatch.setattr(queries, "TREE_SLICE_S", 0.0, raising=False)  # a pause after every span
    seen: dict[str, int] = {}
    ticks = [0]
    select, encode_tree = queries.select, queries.encode_tree  # the module's own names for them

    async def selecting(*args: Any) -> Any:
        found = await select(*args)
        seen["selected"] = ticks[0]
        return found

    async def encoding(roots: Any, budget: int) -> Any:
        seen["encoding"] = ticks[0]
        return await encode_tree(roots, budget)

    monkeypatch.setattr(observability_module, "select", selecting)
    monkeypatch.setattr(observability_module, "encode_tree", encoding)

    _, answer = await _ticks_during(lambda: module._traces_tree({"trace_id": "t"}, InvocationContext()), ticks)
    answer = loads(answer.json)
    assert seen["encoding"] - seen["selected"] >= 1_000, seen  # before: 0
    assert len(answer["roots"][0]["children"]) == 4_999 and answer["truncated"] is False
