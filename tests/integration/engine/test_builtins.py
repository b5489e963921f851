"""Worker-module built-ins and engine trigger types (docs/protocol.md#messages.3, docs/protocol.md#engine-improvements
E8)."""

from __future__ import annotations

import time
import uuid

import pytest

from iii_engine import Engine

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our worker module's built-ins and E8")]

WORKER_KEYS = ["id", "name", "runtime", "version", "os", "ip_address", "status", "connected_at_ms",
               "function_count", "functions", "active_invocations", "latest_metrics"]


async def test_functions_list_hides_engine_functions_unless_asked(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.register("app::f")
    visible = await worker.result_of("engine::functions::list", {"_caller_worker_id": "ignored"})
    assert [f["function_id"] for f in visible["functions"]] == ["app::f"]
    everything = await worker.result_of("engine::functions::list", {"include_internal": True})
    by_id = {f["function_id"]: f for f in everything["functions"]}
    builtin = by_id["engine::workers::list"]
    assert list(builtin) == ["function_id", "description", "request_format", "response_format", "metadata"]
    assert builtin["request_format"]["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "workers" in builtin["response_format"]["properties"]
    frame = await worker.call("engine::functions::list", {"include_internal": "yes"})
    assert frame["error"]["code"] == "deserialization_error"
    await worker.close()


async def test_workers_list_shape_register_metadata_and_filter(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    other = await RawWorker.connect(engine.url)
    await worker.register("w::f")
    before = int(time.time() * 1000)
    listed = await worker.result_of("engine::workers::list", {})
    assert before - 5000 <= listed["timestamp"] <= before + 5000
    mine = next(w for w in listed["workers"] if w["id"] == worker.worker_id)
    assert list(mine) == WORKER_KEYS  # no pid until it is known
    assert mine["status"] == "connected" and mine["ip_address"] == "127.0.0.1"
    assert mine["functions"] == ["w::f"] and mine["function_count"] == 1
    assert mine["runtime"] is None and mine["latest_metrics"] is None
    # metadata arrives as a void call with an object payload (the engine injects _caller_worker_id)
    await worker.send({"type": "invokefunction", "function_id": "engine::workers::register",
                       "action": {"type": "void"},
                       "data": {"runtime": "python", "version": "0.10.0", "name": "w1", "os": "linux",
                                "pid": 4242, "telemetry": {"language": "python"}}})
    await worker.sync()
    filtered = await other.result_of("engine::workers::list", {"worker_id": worker.worker_id})
    [info] = filtered["workers"]
    assert info["pid"] == 4242 and list(info) == [*WORKER_KEYS, "pid"]
    assert (info["name"], info["runtime"], info["version"], info["os"]) == ("w1", "python", "0.10.0", "linux")
    # runtime and version are always overwritten, name/os/pid only when given
    assert await worker.result_of("engine::workers::register", {}) == {"success": True}
    [info] = (await other.result_of("engine::workers::list", {"worker_id": worker.worker_id}))["workers"]
    assert (info["name"], info["runtime"], info["version"], info["pid"]) == ("w1", "unknown", None, 4242)
    await worker.close()
    await other.close()


async def test_register_without_caller_id_is_a_deserialization_error(engine: Engine) -> None:
    with pytest.raises(Exception) as info:
        await engine.invoke("engine::workers::register", {"runtime": "x"})
    assert getattr(info.value, "code", None) == "deserialization_error"


async def test_triggers_list_internal_means_engine_function_ids(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.send({"type": "registertrigger", "id": "mine", "trigger_type": "engine::functions-available",
                       "function_id": "app::on_change", "config": {}})
    await worker.send({"type": "registertrigger", "id": "internal", "trigger_type": "engine::workers-available",
                       "function_id": "engine::something", "config": {}})
    visible = (await worker.result_of("engine::triggers::list", {}))["triggers"]
    assert [t["id"] for t in visible] == ["mine"]
    everything = (await worker.result_of("engine::triggers::list", {"include_internal": True}))["triggers"]
    assert sorted(t["id"] for t in everything) == ["internal", "mine"]
    await worker.close()


async def test_functions_available_fires_on_change_with_all_functions(engine: Engine) -> None:
    listener = await RawWorker.connect(engine.url)
    fid = f"iii.on_functions_available.{uuid.uuid4()}"
    await listener.register(fid)
    await listener.send({"type": "registertrigger", "id": "fa", "trigger_type": "engine::functions-available",
                         "function_id": fid, "config": {}})
    first = await listener.serve_one(None, function_id=fid)  # fired for our own registration
    assert first["data"]["event"] == "functions_changed"
    assert "_caller_worker_id" not in first["data"]
    ids = [f["function_id"] for f in first["data"]["functions"]]
    assert fid in ids and "engine::functions::list" in ids
    other = await RawWorker.connect(engine.url)
    started = time.monotonic()
    await other.register("new::fn")
    second = await listener.serve_one(None, function_id=fid)
    assert time.monotonic() - started < 2.0  # not a 5 s poll
    assert "new::fn" in [f["function_id"] for f in second["data"]["functions"]]
    # a description change alone is not a change of the id set
    await other.register("new::fn", description="changed")
    await other.sync()
    await listener.nothing_for(0.4)
    await other.close()
    third = await listener.serve_one(None, function_id=fid)
    assert "new::fn" not in [f["function_id"] for f in third["data"]["functions"]]
    await listener.close()


async def test_workers_available_events(engine: Engine) -> None:
    listener = await RawWorker.connect(engine.url)
    await listener.register("watch")
    await listener.send({"type": "registertrigger", "id": "wa", "trigger_type": "engine::workers-available",
                         "function_id": "watch", "config": {}})
    await listener.sync()
    other = await RawWorker.connect(engine.url)
    connected = await listener.serve_one(None, function_id="watch")
    assert connected["data"] == {"event": "worker_connected", "worker_id": other.worker_id}
    await other.send({"type": "invokefunction", "function_id": "engine::workers::register", "data": {},
                      "action": {"type": "void"}})
    updated = await listener.serve_one(None, function_id="watch")
    assert updated["data"] == {"event": "worker_metadata_updated", "worker_id": other.worker_id}
    await other.close()
    gone = await listener.serve_one(None, function_id="watch")
    assert gone["data"] == {"event": "worker_disconnected", "worker_id": other.worker_id}
    await listener.close()


async def test_channels_create_rejects_a_bad_payload(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    for data in (None, {"buffer_size": "big"}):
        frame = await worker.call("engine::channels::create", data)
        assert frame["error"]["code"] == "deserialization_error", frame
        assert frame["error"]["message"].startswith("Failed to deserialize input for engine::channels::create")
    await worker.close()
