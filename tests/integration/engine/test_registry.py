"""Functions, services, trigger types and triggers (docs/protocol.md#messages.4,
docs/protocol.md#connection-lifecycle, docs/protocol.md#engine-improvements E2-E5)."""

from __future__ import annotations

import asyncio

import pytest

from iii_engine import Engine

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: reads our registry (E2-E5)")]


async def _ids(worker: RawWorker) -> list[str]:
    result = await worker.result_of("engine::functions::list", {})
    return [f["function_id"] for f in result["functions"]]


async def test_last_writer_wins_and_the_previous_owner_is_restored(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await a.register("shared::fn", description="from a")
    await a.sync()
    await b.register("shared::fn", description="from b")
    await b.sync()
    call = asyncio.create_task(caller.call("shared::fn", {}))
    await b.serve_one("b answered")
    assert (await call)["result"] == "b answered"
    assert engine.workers[a.worker_id].info()["functions"] == []
    await _gone(engine, b)  # E5: a's registration comes back instead of the id vanishing
    call = asyncio.create_task(caller.call("shared::fn", {}))
    await a.serve_one("a answered")
    assert (await call)["result"] == "a answered"
    assert engine.workers[a.worker_id].info()["functions"] == ["shared::fn"]
    await _gone(engine, a)
    assert "shared::fn" not in await _ids(caller)
    await caller.close()


async def test_old_owner_disconnect_does_not_delete_the_new_registration(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    await a.register("f")
    await a.sync()
    await b.register("f")
    await b.sync()
    await _gone(engine, a)
    assert engine.registry.functions["f"].owner == b.worker_id
    await b.close()


async def test_unregister_function_by_anyone_removes_it(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    await a.register("svc::f")
    await a.sync()
    await b.send({"type": "unregisterfunction", "id": "svc::f"})
    await b.sync()
    assert "svc::f" not in await _ids(b)
    assert "svc" not in engine.registry.services
    await a.close()
    await b.close()


async def test_registration_formats_are_stored_verbatim(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    request_format = {"name": "x", "type": "string"}
    await worker.register("fmt::f", description="d", request_format=request_format,
                          response_format={"type": "object"}, metadata={"k": [1, 2]})
    result = await worker.result_of("engine::functions::list", {})
    assert result["functions"] == [{"function_id": "fmt::f", "description": "d", "request_format": request_format,
                                    "response_format": {"type": "object"}, "metadata": {"k": [1, 2]}}]
    await worker.close()


async def test_services_implicit_and_explicit(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.register("orders::create")
    await worker.register("orders::items::list")
    await worker.register("plain")
    await worker.send({"type": "registerservice", "id": "billing", "name": "Billing", "description": "ignored"})
    await worker.send({"type": "registerservice", "id": "nameless"})
    await worker.sync()
    services = engine.registry.services
    assert services["orders"].functions == {"create", "items::list"}
    assert services["Billing"].id == "billing" and services["Billing"].functions == set()
    assert "nameless" in services  # empty name: keyed by id
    await worker.send({"type": "unregisterfunction", "id": "orders::create"})
    await worker.send({"type": "unregisterfunction", "id": "orders::items::list"})
    await worker.sync()
    assert "orders" not in services
    await _gone(engine, worker)
    assert "Billing" in services  # explicit services with no functions stay


async def test_custom_trigger_type_end_to_end_with_pending_trigger(engine: Engine) -> None:
    owner = await RawWorker.connect(engine.url)
    user = await RawWorker.connect(engine.url)
    config = {"every": "1s"}
    # E2: the type does not exist yet, the trigger waits
    await user.send({"type": "registertrigger", "id": "t1", "trigger_type": "ticker", "function_id": "user::tick",
                     "config": config})
    await user.register("user::tick")
    await user.sync()
    assert (await user.result_of("engine::triggers::list", {}))["triggers"] == []
    await owner.send({"type": "registertriggertype", "id": "ticker", "description": "ticks"})
    forwarded = await owner.expect("registertrigger")
    assert forwarded == {"type": "registertrigger", "id": "t1", "trigger_type": "ticker",
                         "function_id": "user::tick", "config": config}
    await owner.send({"type": "triggerregistrationresult", "id": "t1", "trigger_type": "ticker",
                      "function_id": "user::tick"})
    listed = (await user.result_of("engine::triggers::list", {}))["triggers"]
    assert listed == [{"id": "t1", "trigger_type": "ticker", "function_id": "user::tick", "config": config}]
    # a trigger for a known type is forwarded at once
    await user.send({"type": "registertrigger", "id": "t2", "trigger_type": "ticker", "function_id": "user::tick",
                     "config": None})
    assert (await owner.expect("registertrigger"))["id"] == "t2"
    # firing is an ordinary invocation from the owner
    await owner.send({"type": "invokefunction", "function_id": "user::tick", "data": {"n": 1}})
    assert (await user.serve_one())["data"]["n"] == 1
    # unregister from the user reaches the owner with trigger_type
    await user.send({"type": "unregistertrigger", "id": "t2"})
    assert await owner.expect("unregistertrigger") == {"type": "unregistertrigger", "id": "t2",
                                                       "trigger_type": "ticker"}
    # owner leaves: the type goes, t1 waits (pending, not listed) and is replayed to the next owner (E11)
    await _gone(engine, owner)
    assert "ticker" not in engine.registry.trigger_types
    assert "t1" in engine.registry.pending_triggers
    assert (await user.result_of("engine::triggers::list", {}))["triggers"] == []
    owner2 = await RawWorker.connect(engine.url)
    await owner2.send({"type": "registertriggertype", "id": "ticker", "description": "ticks again"})
    assert (await owner2.expect("registertrigger"))["id"] == "t1"
    # the user leaving unregisters its triggers at the owner
    await _gone(engine, user)
    assert (await owner2.expect("unregistertrigger"))["id"] == "t1"
    assert engine.registry.triggers == {}
    await owner2.close()


async def test_unregister_trigger_type_only_by_its_owner(engine: Engine) -> None:
    owner = await RawWorker.connect(engine.url)
    other = await RawWorker.connect(engine.url)
    await owner.send({"type": "registertriggertype", "id": "tt", "description": "d"})
    await owner.send({"type": "registertrigger", "id": "t", "trigger_type": "tt", "function_id": "f", "config": {}})
    await owner.expect("registertrigger")
    await other.send({"type": "unregistertriggertype", "id": "tt"})
    await other.sync()
    assert "tt" in engine.registry.trigger_types
    await owner.send({"type": "unregistertriggertype", "id": "tt"})
    await owner.sync()
    assert "tt" not in engine.registry.trigger_types
    assert "t" in engine.registry.pending_triggers  # waits for the type's next owner (E3, E11)
    await owner.close()
    await other.close()


async def test_builtin_trigger_types_cannot_be_replaced(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.send({"type": "registertriggertype", "id": "engine::functions-available", "description": "mine"})
    await worker.sync()
    entry = engine.registry.trigger_types["engine::functions-available"]
    assert entry.owner is None and entry.handler is not None
    await worker.close()


async def test_disconnect_cleanup_removes_only_what_the_worker_owned(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    await a.register("a::f")
    await a.send({"type": "registertriggertype", "id": "a-type", "description": "d"})
    await b.register("b::g")
    await b.send({"type": "registertrigger", "id": "b-trig", "trigger_type": "engine::workers-available",
                  "function_id": "b::g", "config": {}})
    await a.sync()
    await b.sync()
    await _gone(engine, a)
    assert sorted(engine.registry.functions) == sorted(
        ["b::g", "engine::functions::list", "engine::workers::list", "engine::triggers::list",
         "engine::workers::register", "engine::channels::create", *_module_functions(engine)])
    assert "a-type" not in engine.registry.trigger_types
    assert "b-trig" in engine.registry.triggers
    await b.close()


def _module_functions(engine: Engine) -> list[str]:
    return [fid for fid, e in engine.registry.functions.items()
            if e.owner is None and not fid.startswith(("engine::functions", "engine::workers", "engine::triggers",
                                                       "engine::channels"))]


async def test_unregistering_an_overwriting_registration_brings_back_the_one_it_overwrote(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await a.register("replica::fn", description="from a")
    await a.sync()
    await b.register("replica::fn", description="from b")
    await b.sync()
    await b.send({"type": "unregisterfunction", "id": "replica::fn"})  # b's own: a, still serving it, is back
    await b.sync()
    assert engine.registry.functions["replica::fn"].owner == a.worker_id
    assert engine.workers[a.worker_id].info()["functions"] == ["replica::fn"]
    call = asyncio.create_task(caller.call("replica::fn", {}))
    await a.serve_one("a answered")
    assert (await call)["result"] == "a answered"
    for worker in (a, b, caller):
        await worker.close()


async def test_unregistering_an_overwritten_registration_leaves_the_current_one(engine: Engine) -> None:
    a = await RawWorker.connect(engine.url)
    b = await RawWorker.connect(engine.url)
    await a.register("replica::fn", description="from a")
    await a.sync()
    await b.register("replica::fn", description="from b")
    await b.sync()
    await a.send({"type": "unregisterfunction", "id": "replica::fn"})  # a's kept one goes, b's stays
    await a.sync()
    assert engine.registry.functions["replica::fn"].owner == b.worker_id
    assert engine.registry.shadowed_entries(function_id="replica::fn") == []
    await _gone(engine, b)  # nothing of a's comes back: it took its registration back
    assert "replica::fn" not in await _ids(a)
    await a.close()


async def test_unregistering_an_override_of_a_built_in_brings_the_built_in_back(engine: Engine) -> None:
    mock = await RawWorker.connect(engine.url)
    other = await RawWorker.connect(engine.url)
    await mock.register("engine::channels::create", description="a test's stand-in")
    await mock.sync()
    assert engine.registry.functions["engine::channels::create"].owner == mock.worker_id
    await mock.send({"type": "unregisterfunction", "id": "engine::channels::create"})
    await mock.sync()
    assert engine.registry.functions["engine::channels::create"].owner is None
    created = await other.result_of("engine::channels::create", {})
    assert set(created) >= {"writer", "reader"}
    await mock.close()
    await other.close()
