"""state::* and the state trigger through a real engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine

from .helpers import Recorder, Worker, trigger_active


@pytest.fixture
async def worker(engine_url: str) -> AsyncIterator[Worker]:
    w = await Worker.connect(engine_url)
    yield w
    await w.close()


@pytest.mark.our_engine("expects a fresh store (fixed scopes)")
async def test_state_shapes(worker: Worker) -> None:
    assert await worker.result("state::set", {"scope": "s", "key": "k", "value": {"a": 1}}) == {
        "old_value": None, "new_value": {"a": 1}}
    assert await worker.result("state::set", {"scope": "s", "key": "k", "data": 2}) == {  # `data` alias
        "old_value": {"a": 1}, "new_value": 2}
    assert await worker.result("state::get", {"scope": "s", "key": "k"}) == 2
    assert "result" not in await worker.call("state::get", {"scope": "s", "key": "missing"})
    await worker.result("state::set", {"scope": "b", "key": "k2", "value": "x"})
    assert await worker.result("state::list", {"scope": "s"}) == [2]
    assert await worker.result("state::list_groups", {}) == {"groups": ["b", "s"]}
    assert await worker.result("state::delete", {"scope": "s", "key": "k"}) == 2  # the old value itself
    assert "result" not in await worker.call("state::delete", {"scope": "s", "key": "k"})
    assert await worker.result("state::list_groups", {}) == {"groups": ["b"]}
    update = await worker.result("state::update", {"scope": "u", "key": "c", "ops": [
        {"type": "increment", "path": "n", "by": 3}]})
    assert update == {"old_value": None, "new_value": {"n": 3}}


async def test_state_errors(worker: Worker) -> None:
    error = await worker.error("state::set", {"scope": "s", "key": "k"})
    assert error == {"code": "deserialization_error",
                     "message": "Failed to deserialize input for state::set: missing field `value`"}
    error = await worker.error("state::update", {"scope": "s", "key": "k", "ops": [{"type": "increment",
                                                                                     "path": "n", "by": 0.5}]})
    assert error["code"] == "deserialization_error"


async def test_state_trigger_events_and_filters(engine: Engine, worker: Worker) -> None:
    every, scoped, keyed = Recorder(), Recorder(), Recorder()
    await worker.register("every", every)
    await worker.register("scoped", scoped)
    await worker.register("keyed", keyed)
    ids = [await worker.trigger("state", "every", {}),
           await worker.trigger("state", "scoped", {"scope": "s"}),
           await worker.trigger("state", "keyed", {"scope": "s", "key": "k"})]
    for tid in ids:
        await trigger_active(engine, tid)
    await worker.result("state::set", {"scope": "s", "key": "k", "value": 1})
    await worker.result("state::update", {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "", "value": 5}]})
    await worker.result("state::set", {"scope": "s", "key": "other", "value": 1})
    await worker.result("state::set", {"scope": "t", "key": "k", "value": 1})
    await worker.result("state::delete", {"scope": "s", "key": "k"})
    await worker.result("state::delete", {"scope": "s", "key": "k"})  # M1: nothing removed, no event
    await worker.result("state::set", {"scope": "z", "key": "marker", "value": 0})
    payloads = await every.wait_for(6)
    assert len(payloads) == 6 and "marker" in [p["key"] for p in payloads]
    keyed_events = sorted(await keyed.wait_for(3), key=lambda p: p["event_type"])  # no order across events
    assert keyed_events == [
        {"type": "state", "event_type": "state:created", "scope": "s", "key": "k", "old_value": None, "new_value": 1},
        {"type": "state", "event_type": "state:deleted", "scope": "s", "key": "k", "old_value": 5,
         "new_value": None},
        {"type": "state", "event_type": "state:updated", "scope": "s", "key": "k", "old_value": 1, "new_value": 5},
    ]
    assert len(await scoped.wait_for(4)) == 4
    assert len(keyed.payloads) == 3


@pytest.mark.our_engine("expects a fresh store (fixed scopes)")
async def test_state_concurrent_updates_lose_nothing(worker: Worker) -> None:
    ops = [{"type": "increment", "path": "n", "by": 1}]
    await asyncio.gather(*(worker.result("state::update", {"scope": "c", "key": "k", "ops": ops}) for _ in range(60)))
    assert await worker.result("state::get", {"scope": "c", "key": "k"}) == {"n": 60}


@pytest.mark.our_engine("expects a fresh store (fixed scopes)")
async def test_state_and_streams_do_not_share_items(worker: Worker) -> None:
    await worker.result("state::set", {"scope": "g", "key": "i", "value": "state"})
    await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": "stream"})
    assert await worker.result("state::get", {"scope": "g", "key": "i"}) == "state"
    assert await worker.result("stream::list_all", {}) == {"stream": [{"id": "s", "groups": ["g"]}], "count": 1}
