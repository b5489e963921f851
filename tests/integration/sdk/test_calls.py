"""Calls between workers through an engine over real sockets: results, void, enqueue, errors, timeouts."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from iii import InvocationError, TriggerAction
from iii.iii import III

from .conftest import EngineThread


def worker_of(engine: EngineThread, client: III) -> Any:
    """The engine-side record of ``client``; one round trip first, so ``workerregistered`` was processed."""
    client.list_functions()
    assert client.worker_id is not None
    return engine.engine.workers[client.worker_id]


def _registered(engine: EngineThread, *ids: str) -> None:
    engine.wait_for(lambda: all(i in engine.engine.functions for i in ids))


def test_sync_handler_called_from_another_worker(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    seen: list[Any] = []

    def add(data: Any) -> Any:
        seen.append(data)
        return {"sum": data["x"] + data["y"]}

    a.register_function("math::add", add)
    _registered(engine, "math::add")
    assert b.trigger({"function_id": "math::add", "payload": {"x": 2, "y": 3}}) == {"sum": 5}
    assert seen[0]["_caller_worker_id"] == b.worker_id


def test_async_handler_and_trigger_async_from_a_foreign_loop(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")

    async def upper(data: Any) -> Any:
        await asyncio.sleep(0)
        return data["s"].upper()

    a.register_function("text::upper", upper)
    _registered(engine, "text::upper")

    async def main() -> list[Any]:
        # This loop is not the client's: PROTOCOL §9.5 S4.
        return await asyncio.gather(*(b.trigger_async({"function_id": "text::upper", "payload": {"s": f"x{i}"}})
                                      for i in range(20)))

    assert asyncio.run(main()) == [f"X{i}" for i in range(20)]


def test_void_returns_none_and_runs_the_handler(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    ran = threading.Event()
    a.register_function("jobs::note", lambda data: ran.set())
    _registered(engine, "jobs::note")
    assert b.trigger({"function_id": "jobs::note", "payload": {}, "action": TriggerAction.Void()}) is None
    assert ran.wait(5)
    sent = [f for f in worker_of(engine, b).frames if f.get("function_id") == "jobs::note"]
    assert sent[0]["action"] == {"type": "void"} and "invocation_id" not in sent[0]


def test_enqueue_without_queue_module_raises_enqueue_error(engine: EngineThread, make_worker: Any) -> None:
    b = make_worker("b")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "x", "payload": {}, "action": {"type": "enqueue", "queue": "q"}})
    assert info.value.code == "enqueue_error"
    assert str(info.value) == "{'code': 'enqueue_error', 'message': 'QueueModule not loaded'}"


def test_handler_exception_becomes_invocation_failed(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")

    def boom(data: Any) -> Any:
        raise ValueError("bad input 42")

    a.register_function("fail::boom", boom)
    _registered(engine, "fail::boom")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "fail::boom", "payload": None})
    err = info.value
    assert (err.code, err.message) == ("invocation_failed", "bad input 42")
    assert err.stacktrace is not None and "ValueError: bad input 42" in err.stacktrace
    assert str(err).startswith("{'code': 'invocation_failed', 'message': 'bad input 42', 'stacktrace': ")


def test_unknown_function_error_from_engine(engine: EngineThread, make_worker: Any) -> None:
    b = make_worker("b")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "nobody::home"})
    assert info.value.code == "function_not_found"
    frame = next(f for f in worker_of(engine, b).frames if f.get("function_id") == "nobody::home")
    assert "data" in frame and frame["data"] is None  # S1: data always present


def test_timeout_message_matches_reference(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    release = threading.Event()
    a.register_function("slow::wait", lambda data: release.wait(5))
    _registered(engine, "slow::wait")
    try:
        with pytest.raises(TimeoutError, match=r"^Invocation of 'slow::wait' timed out after 100ms$"):
            b.trigger({"function_id": "slow::wait", "payload": {}, "timeout_ms": 100})
        assert b._pending == {}
    finally:
        release.set()


def test_sync_api_from_many_plain_threads(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("math::double", lambda data: data * 2)
    _registered(engine, "math::double")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: b.trigger({"function_id": "math::double", "payload": i}), range(80)))
    assert results == [i * 2 for i in range(80)]


def test_sync_call_from_the_loop_thread_raises(engine: EngineThread, make_worker: Any) -> None:
    a = make_worker("a")

    async def nested(data: Any) -> Any:
        try:
            a.trigger({"function_id": "x"})
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    a.register_function("loop::nested", nested)
    _registered(engine, "loop::nested")
    assert a.trigger({"function_id": "loop::nested", "payload": {}}) == (
        "Cannot call sync SDK methods from the event loop thread. Use async handler methods instead."
    )


def test_unknown_local_function_answers_function_not_found(engine: EngineThread, make_worker: Any) -> None:
    a = make_worker("a")
    worker = worker_of(engine, a)
    iid = "8e7a1c7e-0000-4000-8000-000000000001"
    engine.run(engine.engine.send(worker, {"type": "invokefunction", "invocation_id": iid,
                                           "function_id": "ghost", "data": None}))
    engine.wait_for(lambda: any(f.get("invocation_id") == iid for f in worker.frames))
    answer = next(f for f in worker.frames if f.get("invocation_id") == iid)
    assert answer == {"invocation_id": iid, "function_id": "ghost", "type": "invocationresult",
                      "error": {"code": "function_not_found", "message": "Function 'ghost' not found"}}


def test_garbage_frames_are_skipped(engine: EngineThread, make_worker: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("ok::one", lambda data: 1)
    _registered(engine, "ok::one")
    worker = worker_of(engine, b)
    for junk in ("not json", "[1,2]", '{"type":"mystery"}', "\x00\x01"):
        engine.run(engine.engine.send(worker, junk))
    assert b.trigger({"function_id": "ok::one", "payload": {}}) == 1


def test_results_keep_model_none_fields_and_api_response_by_name(engine: EngineThread, make_worker: Any) -> None:
    from iii import ApiResponse, FunctionInfo

    a, b = make_worker("a"), make_worker("b")
    a.register_function("m::info", lambda data: FunctionInfo(function_id="f"))
    a.register_function("m::api", lambda data: ApiResponse(status_code=201, body={"k": None}))
    _registered(engine, "m::info", "m::api")
    assert b.trigger({"function_id": "m::info", "payload": {}}) == {
        "function_id": "f", "description": None, "request_format": None, "response_format": None, "metadata": None}
    assert b.trigger({"function_id": "m::api", "payload": {}}) == {
        "status_code": 201, "body": {"k": None}, "headers": {}}


def test_http_invoked_function_is_registered_but_not_invokable_locally(
    engine: EngineThread, make_worker: Any
) -> None:
    from iii import HttpInvocationConfig

    a = make_worker("a")
    a.register_function("ext::lambda", HttpInvocationConfig(url="https://example.com/fn"))
    _registered(engine, "ext::lambda")
    _, frame = engine.engine.functions["ext::lambda"]
    assert frame["invocation"] == {"url": "https://example.com/fn", "method": "POST"}
    worker = worker_of(engine, a)
    iid = "8e7a1c7e-0000-4000-8000-000000000002"
    engine.run(engine.engine.send(worker, {"type": "invokefunction", "invocation_id": iid,
                                           "function_id": "ext::lambda", "data": {}}))
    engine.wait_for(lambda: any(f.get("invocation_id") == iid for f in worker.frames))
    answer = next(f for f in worker.frames if f.get("invocation_id") == iid)
    assert answer["error"]["code"] == "function_not_invokable"


def test_shutdown_fails_pending_calls(engine: EngineThread, make_worker: Any) -> None:
    a = make_worker("a")
    b = III(engine.url)
    b._wait_until_connected(10)
    release = threading.Event()
    a.register_function("slow::hold", lambda data: release.wait(5))
    _registered(engine, "slow::hold")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            b.trigger({"function_id": "slow::hold", "payload": {}})
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    engine.wait_for(lambda: any(r.function_id == "slow::hold" for r in engine.engine.routes.values()))
    b.shutdown()
    t.join(5)
    release.set()
    assert [str(e) for e in errors] == ["iii is shutting down"]
    assert b.get_connection_state() == "disconnected"
