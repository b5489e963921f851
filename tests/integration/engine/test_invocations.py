"""Invocation routing (docs/protocol.md#messages.6, docs/protocol.md#engine-improvements E6/E7) between raw workers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import EngineModule

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our routing tables and E6/E7")]


@pytest.fixture
async def pair(engine: Engine) -> Any:
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    yield caller, callee
    await caller.close()
    await callee.close()


async def test_call_is_routed_with_the_same_invocation_id_both_ways(pair: Any) -> None:
    caller, callee = pair
    await callee.register("calc::add")
    await callee.sync()
    invocation_id = str(uuid.uuid4())
    await caller.send({"type": "invokefunction", "invocation_id": invocation_id, "function_id": "calc::add",
                       "data": {"a": 1, "b": 2}, "traceparent": "00-abc-def-01", "baggage": "k=v"})
    request = await callee.expect("invokefunction")
    assert request == {"type": "invokefunction", "invocation_id": invocation_id, "function_id": "calc::add",
                       "data": {"a": 1, "b": 2, "_caller_worker_id": caller.worker_id},
                       "traceparent": "00-abc-def-01", "baggage": "k=v"}
    await callee.send({"type": "invocationresult", "invocation_id": invocation_id, "function_id": "calc::add",
                       "result": 3})
    assert await caller.expect("invocationresult") == {
        "type": "invocationresult", "invocation_id": invocation_id, "function_id": "calc::add", "result": 3}


async def test_calls_work_in_both_directions(pair: Any) -> None:
    a, b = pair
    await a.register("a::f")
    await b.register("b::g")
    await a.sync()
    await b.sync()
    call_b = asyncio.create_task(a.call("b::g", {"n": 1}))
    await b.serve_one("from b")
    assert (await call_b)["result"] == "from b"
    call_a = asyncio.create_task(b.call("a::f", {"n": 2}))
    await a.serve_one("from a")
    assert (await call_a)["result"] == "from a"


async def test_null_result_is_sent_without_result_key_and_errors_pass_through(pair: Any) -> None:
    caller, callee = pair
    await callee.register("f")
    await callee.sync()
    pending = asyncio.create_task(caller.call("f", 1))
    request = await callee.expect("invokefunction")
    await callee.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "f",
                       "result": None})
    frame = await pending
    assert "result" not in frame and "error" not in frame
    pending = asyncio.create_task(caller.call("f", 2))
    request = await callee.expect("invokefunction")
    error = {"code": "invocation_failed", "message": "boom", "stacktrace": "Traceback..."}
    await callee.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "f",
                       "error": error})
    assert (await pending)["error"] == error


async def test_caller_worker_id_rules(pair: Any) -> None:
    caller, callee = pair
    await callee.register("f")
    await callee.sync()
    # object data: injected, overwriting a forged value
    await caller.send({"type": "invokefunction", "function_id": "f", "data": {"_caller_worker_id": "forged"}})
    assert (await callee.serve_one())["data"] == {"_caller_worker_id": caller.worker_id}
    # non-object data: untouched
    for data in ([1, 2], "text", 7, None):
        await caller.send({"type": "invokefunction", "function_id": "f", "data": data})
        assert (await callee.serve_one())["data"] == data
    # void: injected too
    await caller.send({"type": "invokefunction", "function_id": "f", "data": {}, "action": {"type": "void"}})
    assert (await callee.serve_one())["data"] == {"_caller_worker_id": caller.worker_id}


async def test_fresh_invocation_id_when_the_caller_gives_none_and_no_reply(pair: Any) -> None:
    caller, callee = pair
    await callee.register("f")
    await callee.sync()
    await caller.send({"type": "invokefunction", "function_id": "f", "data": {}})
    request = await callee.serve_one("ignored")
    assert uuid.UUID(request["invocation_id"]).version == 4
    await caller.nothing_for(0.1)


async def test_void_discards_the_invocation_id_and_never_replies(pair: Any) -> None:
    caller, callee = pair
    await callee.register("f")
    await callee.sync()
    given = str(uuid.uuid4())
    await caller.send({"type": "invokefunction", "invocation_id": given, "function_id": "f", "data": {},
                       "action": {"type": "void"}})
    request = await callee.serve_one("ignored")
    assert request["invocation_id"] != given
    assert "action" not in request
    await caller.nothing_for(0.1)


async def test_unknown_function_exact_error(pair: Any) -> None:
    caller, _ = pair
    frame = await caller.call("missing::fn", {})
    assert frame == {"type": "invocationresult", "invocation_id": frame["invocation_id"],
                     "function_id": "missing::fn",
                     "error": {"code": "function_not_found", "message": "Function missing::fn not found"}}


async def test_enqueue_without_queue_module(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    frame = await worker.call("anything", {"x": 1}, action={"type": "enqueue", "queue": "q"})
    assert frame["error"] == {"code": "enqueue_error", "message": "QueueModule not loaded"}
    await worker.close()


class _FakeQueue(EngineModule):
    name = "queue"
    class_names = ()

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str, Any]] = []

    async def start(self) -> None:
        pass

    async def enqueue(self, queue: str, function_id: str, data: Any) -> str:
        self.jobs.append((queue, function_id, data))
        return "receipt-1"


async def test_enqueue_hands_raw_data_to_the_queue_module() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        fake = _FakeQueue()
        engine.serve_named_queues(fake)
        worker = await RawWorker.connect(engine.url)
        frame = await worker.call("target", {"x": 1}, action={"type": "enqueue", "queue": "orders"})
        assert frame["result"] == {"messageReceiptId": "receipt-1"}
        assert fake.jobs == [("orders", "target", {"x": 1})]  # no _caller_worker_id, existence not checked
        await worker.close()


async def test_callee_disconnect_mid_call_gives_invocation_stopped(engine: Engine) -> None:
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    await callee.register("slow")
    await callee.sync()
    pending = asyncio.create_task(caller.call("slow", {}))
    await callee.expect("invokefunction")
    assert engine.workers[callee.worker_id].info()["active_invocations"] == 1
    await callee.close()
    frame = await pending
    # the function and the cause named (before: a bare "Invocation stopped"); the code as the wire has it
    assert frame["error"] == {
        "code": "invocation_stopped",
        "message": "Invocation of slow stopped: its callee's worker disconnected before answering; the call may have "
                   "run"}
    assert engine.invocations.pending == {}
    await caller.close()


async def test_caller_disconnect_halts_its_calls_and_late_results_are_dropped(engine: Engine) -> None:
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    await callee.register("slow")
    await callee.sync()
    await caller.send({"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": "slow",
                       "data": {}})
    request = await callee.expect("invokefunction")
    await _gone(engine, caller)
    assert request["invocation_id"] not in engine.invocations.pending
    await callee.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "slow",
                       "result": 1})
    await callee.sync()  # the late result was handled without harm
    assert engine.workers[callee.worker_id].in_flight == set()
    await callee.close()


async def test_only_the_routed_worker_may_complete_an_invocation(engine: Engine) -> None:
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    intruder = await RawWorker.connect(engine.url)
    await callee.register("f")
    await callee.sync()
    pending = asyncio.create_task(caller.call("f", {}))
    request = await callee.expect("invokefunction")
    await intruder.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "f",
                         "result": "forged"})
    await intruder.sync()
    assert not pending.done()
    await callee.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "f",
                       "result": "real"})
    assert (await pending)["result"] == "real"
    for w in (caller, callee, intruder):
        await w.close()


async def test_engine_invocation_timeout_when_configured() -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], invocation_timeout_ms=100)
    async with Engine(config=config) as engine:
        caller = await RawWorker.connect(engine.url)
        callee = await RawWorker.connect(engine.url)
        await callee.register("never")
        await callee.sync()
        pending = asyncio.create_task(caller.call("never", {}))
        request = await callee.expect("invokefunction")
        frame = await pending
        assert frame["error"]["code"] == "invocation_timeout"
        assert "never" in frame["error"]["message"]
        await callee.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "never", "result": "late"})
        await callee.sync()
        await caller.nothing_for(0.05)  # the late result is not forwarded
        assert engine.workers[callee.worker_id].in_flight == set()
        await caller.close()
        await callee.close()


async def test_builtin_input_errors_and_uppercase_ids(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    frame = await worker.call("engine::functions::list", None)
    assert frame["error"]["code"] == "deserialization_error"
    assert frame["error"]["message"].startswith("Failed to deserialize input for engine::functions::list: ")
    upper = str(uuid.uuid4()).upper()
    await worker.send({"type": "invokefunction", "invocation_id": upper, "function_id": "engine::workers::list",
                       "data": {}})
    frame = await worker.expect("invocationresult")
    assert frame["invocation_id"] == upper.lower()  # production re-serialises parsed UUIDs
    await worker.close()


async def test_engine_internal_invoke_reaches_a_worker(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.register("w::double")
    await worker.sync()
    call = asyncio.create_task(engine.invoke("w::double", {"n": 2}))
    request = await worker.serve_one(4)
    assert request["data"] == {"n": 2}  # engine calls carry no _caller_worker_id
    assert await call == 4
    await worker.close()
