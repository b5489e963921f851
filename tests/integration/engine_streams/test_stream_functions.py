"""stream::* through a real engine over real sockets: shapes, errors, custom routing, events and triggers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine import Engine

from .helpers import Recorder, Worker, WorkerError, registered, trigger_active

pytestmark = pytest.mark.our_engine("expects a fresh store (fixed stream names, list_all counts)")


@pytest.fixture
async def worker(engine_url: str) -> AsyncIterator[Worker]:
    w = await Worker.connect(engine_url)
    yield w
    await w.close()


def item(stream: str = "s", group: str = "g", item_id: str = "i", **extra: Any) -> dict[str, Any]:
    return {"stream_name": stream, "group_id": group, "item_id": item_id, **extra}


async def test_set_get_list_delete_shapes(worker: Worker) -> None:
    assert await worker.result("stream::set", item(data={"n": 1})) == {"old_value": None, "new_value": {"n": 1}}
    assert await worker.result("stream::set", item(data=[1, 2])) == {"old_value": {"n": 1}, "new_value": [1, 2]}
    assert await worker.result("stream::get", item()) == [1, 2]
    await worker.result("stream::set", item(item_id="j", data="x"))
    assert await worker.result("stream::list", {"stream_name": "s", "group_id": "g"}) == [[1, 2], "x"]
    assert await worker.result("stream::list", {"stream_name": "s", "group_id": "none"}) == []
    assert await worker.result("stream::list_groups", {"stream_name": "s"}) == ["g"]
    assert await worker.result("stream::delete", item()) == {"old_value": [1, 2]}
    assert await worker.result("stream::delete", item()) == {"old_value": None}


async def test_get_of_missing_item_has_no_result_key(worker: Worker) -> None:
    frame = await worker.call("stream::get", item(item_id="missing"))
    assert "result" not in frame and "error" not in frame


async def test_update_applies_ops_and_returns_both_values(worker: Worker) -> None:
    ops = [{"type": "increment", "path": "n", "by": 2}, {"type": "set", "path": "a.b", "value": [1]},
           {"type": "merge", "path": "", "value": {"m": True}}]
    assert await worker.result("stream::update", item(ops=ops)) == {
        "old_value": None, "new_value": {"n": 2, "a.b": [1], "m": True}}
    result = await worker.result("stream::update", item(ops=[{"type": "decrement", "path": "n", "by": 5},
                                                             {"type": "remove", "path": "m"}]))
    assert result == {"old_value": {"n": 2, "a.b": [1], "m": True}, "new_value": {"n": -3, "a.b": [1]}}


async def test_list_all_sorted_with_count(worker: Worker) -> None:
    for stream, group in (("b", "g2"), ("b", "g1"), ("a", "x")):
        await worker.result("stream::set", item(stream, group, data=1))
    assert await worker.result("stream::list_all", {}) == {
        "stream": [{"id": "a", "groups": ["x"]}, {"id": "b", "groups": ["g1", "g2"]}], "count": 2}


@pytest.mark.parametrize(("function_id", "data", "detail"), [
    ("stream::set", item(), "missing field `data`"),
    ("stream::get", {"stream_name": "s", "group_id": "g"}, "missing field `item_id`"),
    ("stream::get", None, "expected a JSON object"),
    ("stream::list", {"stream_name": 1, "group_id": "g"}, "invalid type: integer `1`, expected a string"),
    ("stream::update", item(ops=[{"type": "increment", "path": "n", "by": 1.5}]), "'by' must be"),
    ("stream::update", item(ops=[{"type": "increment", "path": "n", "by": 2.0}]), "'by' must be"),
    ("stream::update", item(ops=[{"type": "append", "path": "n"}]), "unknown type 'append'"),
    ("stream::update", item(ops={"type": "set"}), "expected a sequence"),
    ("stream::send", {"stream_name": "s", "group_id": "g"}, "missing field `type`"),
])
async def test_bad_input_is_a_deserialization_error(worker: Worker, function_id: str, data: Any,
                                                    detail: str) -> None:
    error = await worker.error(function_id, data)
    assert error["code"] == "deserialization_error"
    assert error["message"].startswith(f"Failed to deserialize input for {function_id}: ")
    assert detail in error["message"]


async def test_failed_update_writes_nothing(worker: Worker) -> None:
    await worker.error("stream::update", item(ops=[{"type": "set", "path": "a", "value": 1}, {"type": "bogus"}]))
    assert "result" not in await worker.call("stream::get", item())


async def test_stream_trigger_gets_each_change_once_in_wrapper_shape(engine: Engine, worker: Worker) -> None:
    seen = Recorder()
    await worker.register("on_change", seen)
    tid = await worker.trigger("stream", "on_change", {"stream_name": "s", "group_id": "", "item_id": ""})
    await trigger_active(engine, tid)
    await worker.result("stream::set", item(data={"v": 1}))
    await worker.result("stream::update", item(ops=[{"type": "increment", "path": "v", "by": 1}]))
    await worker.result("stream::delete", item())
    await worker.result("stream::delete", item())  # nothing removed: no event
    await worker.result("stream::send", {"stream_name": "s", "group_id": "g", "type": "ping", "data": {"x": 1}})
    await worker.result("stream::set", item(stream="other", data=1))  # another stream: filtered out
    # a final marker change: once it arrived, every earlier event has been delivered (one task each, spawned in order)
    await worker.result("stream::set", item(item_id="marker", data=0))
    await seen.wait_for(5)
    await asyncio.sleep(0.05)  # only to give a duplicate the chance to show up; not used for synchronisation
    payloads = [p for p in seen.payloads if p["id"] != "marker"]
    assert len(payloads) == 4, payloads
    by_kind = {p["event"]["type"]: p for p in payloads}
    assert set(by_kind) == {"create", "update", "delete", "event"}
    create = by_kind["create"]
    assert set(create) == {"type", "timestamp", "streamName", "groupId", "id", "event"}
    assert (create["type"], create["streamName"], create["groupId"], create["id"]) == ("stream", "s", "g", "i")
    assert isinstance(create["timestamp"], int) and create["timestamp"] > 1_600_000_000_000
    assert create["event"] == {"type": "create", "data": {"v": 1}}
    assert by_kind["update"]["event"] == {"type": "update", "data": {"v": 2}}
    assert by_kind["delete"]["event"] == {"type": "delete", "data": {"v": 2}}
    assert by_kind["event"]["id"] is None
    assert by_kind["event"]["event"] == {"type": "event", "event": {"type": "ping", "data": {"x": 1}}}


async def test_stream_trigger_filters_and_condition(engine: Engine, worker: Worker) -> None:
    seen = Recorder()
    await worker.register("on_item", seen)
    await worker.register("only_big", lambda data: _async(data["event"]["data"]["n"] > 5))
    tid = await worker.trigger("stream", "on_item", {"stream_name": "s", "group_id": "g", "item_id": "x",
                                                     "condition_function_id": "only_big"})
    await trigger_active(engine, tid)
    await worker.result("stream::set", item(item_id="y", data={"n": 10}))  # other item
    await worker.result("stream::set", item(group_id="h", item_id="x", data={"n": 10}))  # other group
    await worker.result("stream::set", item(item_id="x", data={"n": 1}))  # condition false
    await worker.result("stream::set", item(item_id="x", data={"n": 9}))
    payloads = await seen.wait_for(1)
    assert [p["event"]["data"] for p in payloads] == [{"n": 9}]


async def _async(value: Any) -> Any:
    return value


async def test_stream_trigger_without_stream_name_is_rejected(engine: Engine, worker: Worker) -> None:
    await worker.register("h", Recorder())
    bad = await worker.trigger("stream", "h", {"group_id": "g"})
    good = await worker.trigger("stream", "h", {"stream_name": "s"})
    await trigger_active(engine, good)
    assert bad not in engine.registry.triggers


# -- custom streams served by a raw worker ------------------------------------------------------------------------


async def test_custom_stream_routing_and_events(engine: Engine, worker: Worker) -> None:
    server = await Worker.connect(engine.url)
    name = f"custom-{uuid.uuid4()}"
    data: dict[str, Any] = {}

    async def get(req: Any) -> Any:
        return data.get(req["item_id"])

    async def set_(req: Any) -> Any:
        old = data.get(req["item_id"])
        data[req["item_id"]] = req["data"]
        return {"old_value": old, "new_value": req["data"]}

    async def list_(req: Any) -> Any:
        return list(data.values())

    async def list_groups(req: Any) -> Any:
        return ["only-group"]

    for op, handler in (("get", get), ("set", set_), ("list", list_), ("list_groups", list_groups)):
        await server.register(f"stream::{op}({name})", handler)
    seen = Recorder()
    await worker.register("changes", seen)
    tid = await worker.trigger("stream", "changes", {"stream_name": name})
    await registered(engine, f"stream::list_groups({name})")
    await trigger_active(engine, tid)

    assert await worker.result("stream::set", item(name, data={"c": 1})) == {"old_value": None, "new_value": {"c": 1}}
    assert server.calls[f"stream::set({name})"][0] == item(name, data={"c": 1})  # the full input, forwarded
    assert await worker.result("stream::get", item(name)) == {"c": 1}
    assert await worker.result("stream::list", {"stream_name": name, "group_id": "g"}) == [{"c": 1}]
    assert await worker.result("stream::list_groups", {"stream_name": name}) == ["only-group"]
    # no update(NAME): composed on the custom get and set (ST1), landing where get reads
    update = await worker.result("stream::update", item(name, ops=[{"type": "increment", "path": "c", "by": 4}]))
    assert update == {"old_value": {"c": 1}, "new_value": {"c": 5}}
    assert data["i"] == {"c": 5}
    assert await worker.result("stream::list_all", {}) == {"stream": [], "count": 0}  # custom streams invisible
    events = await seen.wait_for(2)
    assert [(e["event"]["type"], e["event"]["data"]) for e in events] == [("create", {"c": 1}), ("update", {"c": 5})]
    await server.close()


async def test_custom_update_function_is_used_when_registered(engine: Engine, worker: Worker) -> None:
    server = await Worker.connect(engine.url)
    name = "with-update"
    await server.register(f"stream::update({name})", lambda req: _async({"new_value": {"ops": len(req["ops"])}}))
    await registered(engine, f"stream::update({name})")
    result = await worker.result("stream::update", item(name, ops=[{"type": "remove", "path": "x"}]))
    assert result == {"old_value": None, "new_value": {"ops": 1}}
    assert server.calls[f"stream::update({name})"][0]["ops"] == [{"type": "remove", "path": "x"}]
    await server.close()


async def test_custom_result_checks_and_error_wrapping(engine: Engine, worker: Worker) -> None:
    server = await Worker.connect(engine.url)

    async def failing(req: Any) -> Any:
        raise WorkerError("boom", "disk on fire")

    await server.register("stream::set(none)", lambda req: _async(None))
    await server.register("stream::set(shape)", lambda req: _async({"old_value": 1}))
    await server.register("stream::set(fails)", failing)
    await server.register("stream::get(fails)", failing)
    await server.register("stream::delete(none)", lambda req: _async(None))
    await server.register("stream::delete(shape)", lambda req: _async([1]))
    await registered(engine, "stream::delete(shape)")

    assert await worker.error("stream::set", item("none", data=1)) == {
        "code": "STREAM_SET_ERROR", "message": "Function returned no result"}
    assert (await worker.error("stream::set", item("shape", data=1)))["code"] == "JSON_ERROR"
    assert await worker.error("stream::set", item("fails", data=1)) == {
        "code": "STREAM_SET_ERROR", "message": "Failed to set value: Failed to invoke function: disk on fire"}
    assert await worker.error("stream::get", item("fails")) == {"code": "boom", "message": "disk on fire"}
    assert await worker.result("stream::delete", item("none")) == {"old_value": None}  # ST2
    assert (await worker.error("stream::delete", item("shape")))["code"] == "JSON_ERROR"
    await server.close()


async def test_custom_stream_falls_back_to_store_when_worker_leaves(engine: Engine, worker: Worker) -> None:
    server = await Worker.connect(engine.url)
    await server.register("stream::get(fb)", lambda req: _async("from worker"))
    await registered(engine, "stream::get(fb)")
    assert await worker.result("stream::get", item("fb")) == "from worker"
    await server.close()
    for _ in range(500):
        if not engine.has_function("stream::get(fb)"):
            break
        await asyncio.sleep(0.01)
    assert "result" not in await worker.call("stream::get", item("fb"))


async def test_composed_updates_lose_no_increment(engine: Engine, worker: Worker) -> None:
    server = await Worker.connect(engine.url)
    store: dict[str, Any] = {}

    async def get(req: Any) -> Any:
        await asyncio.sleep(0)  # widen the read-modify-write window
        return store.get("n")

    async def set_(req: Any) -> Any:
        store["n"] = req["data"]
        return {"new_value": req["data"]}

    await server.register("stream::get(ctr)", get)
    await server.register("stream::set(ctr)", set_)
    await registered(engine, "stream::set(ctr)")
    ops = [{"type": "increment", "path": "n", "by": 1}]
    await asyncio.gather(*(worker.result("stream::update", item("ctr", ops=ops)) for _ in range(40)))
    assert store["n"] == {"n": 40}
    await server.close()


async def test_store_updates_lose_no_increment(worker: Worker) -> None:
    ops = [{"type": "increment", "path": "n", "by": 1}]
    results = await asyncio.gather(*(worker.result("stream::update", item(ops=ops)) for _ in range(100)))
    assert sorted(r["new_value"]["n"] for r in results) == list(range(1, 101))
    assert await worker.result("stream::get", item()) == {"n": 100}


HOSTILE = ["a:b", "*", "it's \"quoted\"", "'; DROP TABLE stream_items; --", "x" * 2000, "ünï©ødé 🚀", "%_\\",
           "stream:s:g"]


async def test_hostile_names_stored_and_listed_literally(worker: Worker) -> None:
    for name in HOSTILE:
        await worker.result("stream::set", item("hostile", name, name, data={"name": name}))
    for name in HOSTILE:
        assert await worker.result("stream::get", item("hostile", name, name)) == {"name": name}
        assert await worker.result("stream::list", {"stream_name": "hostile", "group_id": name}) == [{"name": name}]
    assert sorted(await worker.result("stream::list_groups", {"stream_name": "hostile"})) == sorted(HOSTILE)
    listed = (await worker.result("stream::list_all", {}))["stream"]
    assert listed == [{"id": "hostile", "groups": sorted(HOSTILE)}]
