"""Calls between workers through an engine over real sockets: results, void, enqueue, errors, timeouts.

Behavioural tests run against the fake and our real engine (``served``); frame-level ones use the fake only.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from iii import InvocationError, TriggerAction
from iii.iii import III

from .conftest import EngineThread, Harness, MakeWorker


def test_sync_handler_called_from_another_worker(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    seen: list[Any] = []

    def add(data: Any) -> Any:
        seen.append(data)
        return {"sum": data["x"] + data["y"]}

    a.register_function("math::add", add)
    served.wait_registered("math::add")
    assert b.trigger({"function_id": "math::add", "payload": {"x": 2, "y": 3}}) == {"sum": 5}
    assert seen[0]["_caller_worker_id"] == b.worker_id


def test_async_handler_and_trigger_async_from_a_foreign_loop(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")

    async def upper(data: Any) -> Any:
        await asyncio.sleep(0)
        return data["s"].upper()

    a.register_function("text::upper", upper)
    served.wait_registered("text::upper")

    async def main() -> list[Any]:
        # This loop is not the client's: docs/protocol.md#sdk-improvements S4.
        return await asyncio.gather(*(b.trigger_async({"function_id": "text::upper", "payload": {"s": f"x{i}"}})
                                      for i in range(20)))

    assert asyncio.run(main()) == [f"X{i}" for i in range(20)]


def test_void_returns_none_and_runs_the_handler(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    ran = threading.Event()
    a.register_function("jobs::note", lambda data: ran.set())
    served.wait_registered("jobs::note")
    assert b.trigger({"function_id": "jobs::note", "payload": {}, "action": TriggerAction.Void()}) is None
    assert ran.wait(5)


def test_void_frame_has_no_invocation_id(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    b = make_fake_worker("b")
    assert b.trigger({"function_id": "jobs::note", "payload": {}, "action": TriggerAction.Void()}) is None
    sent = [f for f in fake.worker(b).frames if f.get("function_id") == "jobs::note"]
    assert sent[0]["action"] == {"type": "void"} and "invocation_id" not in sent[0]


def test_enqueue_errors_come_back_as_enqueue_error(served: Harness, make_worker: MakeWorker) -> None:
    b = make_worker("b")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "x", "payload": {}, "action": {"type": "enqueue", "queue": "q"}})
    assert info.value.code == "enqueue_error"
    # The fake has no queue module; ours has one, without a queue named "q" (docs/protocol.md#invocations).
    message = {"fake": "QueueModule not loaded", "real": "Queue 'q' not found"}[served.kind]
    assert str(info.value) == str({"code": "enqueue_error", "message": message})


def test_handler_exception_becomes_invocation_failed(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")

    def boom(data: Any) -> Any:
        raise ValueError("bad input 42")

    a.register_function("fail::boom", boom)
    served.wait_registered("fail::boom")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "fail::boom", "payload": None})
    err = info.value
    assert (err.code, err.message) == ("invocation_failed", "bad input 42")
    assert err.stacktrace is not None and "ValueError: bad input 42" in err.stacktrace
    assert str(err).startswith("{'code': 'invocation_failed', 'message': 'bad input 42', 'stacktrace': ")


def test_unknown_function_error_from_engine(served: Harness, make_worker: MakeWorker) -> None:
    b = make_worker("b")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "nobody::home"})
    assert (info.value.code, info.value.message) == ("function_not_found", "Function nobody::home not found")


def test_payloadless_call_still_sends_data(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    b = make_fake_worker("b")
    with pytest.raises(InvocationError):
        b.trigger({"function_id": "nobody::home"})
    frame = next(f for f in fake.worker(b).frames if f.get("function_id") == "nobody::home")
    assert "data" in frame and frame["data"] is None  # S1: data always present


def test_timeout_message_matches_reference(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    release = threading.Event()
    a.register_function("slow::wait", lambda data: release.wait(5))
    served.wait_registered("slow::wait")
    try:
        with pytest.raises(TimeoutError, match=r"^Invocation of 'slow::wait' timed out after 100ms$"):
            b.trigger({"function_id": "slow::wait", "payload": {}, "timeout_ms": 100})
        assert len(b._calls) == 0
    finally:
        release.set()
    # The late result is ignored and the connection stays usable.
    a.register_function("fast::one", lambda data: 1)
    served.wait_registered("fast::one")
    assert b.trigger({"function_id": "fast::one", "payload": {}}) == 1


def test_sync_api_from_many_plain_threads(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("math::double", lambda data: data * 2)
    served.wait_registered("math::double")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: b.trigger({"function_id": "math::double", "payload": i}), range(80)))
    assert results == [i * 2 for i in range(80)]


def test_sync_call_from_the_loop_thread_raises(served: Harness, make_worker: MakeWorker) -> None:
    a = make_worker("a")

    async def nested(data: Any) -> Any:
        try:
            a.trigger({"function_id": "x"})
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    a.register_function("loop::nested", nested)
    served.wait_registered("loop::nested")
    assert a.trigger({"function_id": "loop::nested", "payload": {}}) == (
        "Cannot call sync SDK methods from the event loop thread. Use async handler methods instead."
    )


def test_unknown_local_function_answers_function_not_found(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a = make_fake_worker("a")
    worker = fake.worker(a)
    iid = "8e7a1c7e-0000-4000-8000-000000000001"
    fake.send_to(a, {"type": "invokefunction", "invocation_id": iid, "function_id": "ghost", "data": None})
    fake.wait_for(lambda: any(f.get("invocation_id") == iid for f in worker.frames))
    answer = next(f for f in worker.frames if f.get("invocation_id") == iid)
    assert answer == {"invocation_id": iid, "function_id": "ghost", "type": "invocationresult",
                      "error": {"code": "function_not_found", "message": "Function 'ghost' not found"}}


def test_garbage_frames_are_skipped(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("ok::one", lambda data: 1)
    served.wait_registered("ok::one")
    for junk in ("not json", "[1,2]", '{"type":"mystery"}', "\x00\x01", '{"type":"invokefunction"}'):
        served.send_to(b, junk)
    assert b.trigger({"function_id": "ok::one", "payload": {}}) == 1
    assert b.get_connection_state() == "connected"


def test_results_keep_model_none_fields_and_api_response_by_name(served: Harness, make_worker: MakeWorker) -> None:
    from iii import ApiResponse, FunctionInfo

    a, b = make_worker("a"), make_worker("b")
    a.register_function("m::info", lambda data: FunctionInfo(function_id="f"))
    a.register_function("m::api", lambda data: ApiResponse(status_code=201, body={"k": None}))
    served.wait_registered("m::info", "m::api")
    assert b.trigger({"function_id": "m::info", "payload": {}}) == {
        "function_id": "f", "description": None, "request_format": None, "response_format": None, "metadata": None}
    assert b.trigger({"function_id": "m::api", "payload": {}}) == {
        "status_code": 201, "body": {"k": None}, "headers": {}}


def test_http_invoked_function_is_registered_but_not_invokable_locally(
    fake: EngineThread, make_fake_worker: MakeWorker
) -> None:
    from iii import HttpInvocationConfig

    a = make_fake_worker("a")
    a.register_function("ext::lambda", HttpInvocationConfig(url="https://example.com/fn"))
    fake.wait_registered("ext::lambda")
    _, frame = fake.engine.functions["ext::lambda"]
    assert frame["invocation"] == {"url": "https://example.com/fn", "method": "POST"}
    worker = fake.worker(a)
    iid = "8e7a1c7e-0000-4000-8000-000000000002"
    fake.send_to(a, {"type": "invokefunction", "invocation_id": iid, "function_id": "ext::lambda", "data": {}})
    fake.wait_for(lambda: any(f.get("invocation_id") == iid for f in worker.frames))
    answer = next(f for f in worker.frames if f.get("invocation_id") == iid)
    assert answer["error"]["code"] == "function_not_invokable"


def test_shutdown_fails_pending_calls(served: Harness, make_worker: MakeWorker) -> None:
    a = make_worker("a")
    b = III(served.url)
    b._wait_until_connected(10)
    release = threading.Event()
    a.register_function("slow::hold", lambda data: release.wait(5))
    served.wait_registered("slow::hold")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            b.trigger({"function_id": "slow::hold", "payload": {}})
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    served.wait_for(lambda: "slow::hold" in served.calls_in_flight())
    b.shutdown()
    t.join(5)
    release.set()
    assert [str(e) for e in errors] == ["iii is shutting down"]
    assert b.get_connection_state() == "disconnected"


def test_sync_trigger_hands_the_loop_one_callback(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    a, b = make_fake_worker("a"), make_fake_worker("b")
    a.register_function("math::inc", lambda data: data + 1)
    fake.wait_registered("math::inc")

    def no_coroutine_hop(coro: Any) -> Any:
        coro.close()
        raise AssertionError("a sync trigger ran a coroutine on the client's loop")

    # The frame is built on the calling thread and the result comes back through a waiter: no task, no
    # concurrent future chained to one, no flusher task for the write.
    flusher = b._conn._flusher
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(b._bridge, "run", no_coroutine_hop)
        assert [b.trigger({"function_id": "math::inc", "payload": i}) for i in range(20)] == list(range(1, 21))
    assert b._conn._flusher is flusher and len(b._calls) == 0
    frame = next(f for f in fake.worker(b).frames if f.get("function_id") == "math::inc")
    assert set(frame) == {"type", "invocation_id", "function_id", "data"}


def test_trigger_async_from_a_foreign_loop_needs_no_task_on_the_clients_loop(
    fake: EngineThread, make_fake_worker: MakeWorker
) -> None:
    a, b = make_fake_worker("a"), make_fake_worker("b")
    release = threading.Event()
    a.register_function("math::inc", lambda data: data + 1)
    a.register_function("slow::hold", lambda data: release.wait(5))
    fake.wait_registered("math::inc", "slow::hold")

    def no_coroutine_hop(coro: Any) -> Any:
        coro.close()
        raise AssertionError("trigger_async ran a coroutine on the client's loop")

    async def main() -> list[Any]:
        results = await asyncio.gather(*(b.trigger_async({"function_id": "math::inc", "payload": i})
                                         for i in range(20)))
        # A cancelled waiter: the client forgets the call at once (its late result is ignored).
        held = asyncio.ensure_future(b.trigger_async({"function_id": "slow::hold", "payload": {}}))
        await asyncio.to_thread(fake.wait_for, lambda: "slow::hold" in fake.calls_in_flight())
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        return results

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(b._bridge, "run_async", no_coroutine_hop)
            assert asyncio.run(main()) == list(range(1, 21))
        fake.wait_for(lambda: len(b._calls) == 0)
    finally:
        release.set()
