"""max_calls_per_worker counts a worker's calls of worker functions apart from its built-in calls and enqueue
actions, a refusal names the function holding the calls, and a stopped call names its function and the cause.

Before: a call a callee never answers counts until the callee answers or a side disconnects (the wire has no
cancel: the SDK's ``timeout_ms`` or a cancelled ``trigger_async`` does not end it). With no
``invocation_timeout_ms``, 10,000 such calls left the worker refused everything with ``too_many_calls``, its
``list_functions`` and ``create_channel`` too, until it reconnected; the refusal said only "has 10000 calls in
flight", not which callee held them. A callee dying mid-call ended its callers' calls with a bare
``Invocation stopped``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii import register_worker
from iii.errors import InvocationError
from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction, EngineError, InvocationContext

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our max_calls_per_worker bound")]

LIMIT = 3


def _engine(**config: Any) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], max_calls_per_worker=LIMIT, **config))


@pytest.fixture
async def bounded() -> AsyncIterator[Engine]:
    async with _engine() as running:
        yield running


async def _callee(engine: Engine, *function_ids: str) -> RawWorker:
    callee = await RawWorker.connect(engine.url)
    for function_id in function_ids:
        await callee.register(function_id)
    await callee.sync()
    return callee


def _invoke(function_id: str, *, void: bool = False) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "invokefunction", "function_id": function_id, "data": {}}
    if void:
        frame["action"] = {"type": "void"}
    else:
        frame["invocation_id"] = str(uuid.uuid4())
    return frame


async def test_an_sdk_worker_whose_timed_out_calls_fill_the_bound_still_lists_functions_and_creates_channels(
        bounded: Engine) -> None:
    callee = await _callee(bounded, "slow::never", "slow::other")
    sdk = await asyncio.to_thread(register_worker, bounded.url)
    try:
        for _ in range(LIMIT):  # the SDK gives up on each; the engine holds each until the callee answers
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(sdk.trigger, {"function_id": "slow::never", "payload": {},
                                                      "timeout_ms": 50})
            await callee.expect("invokefunction")
        # the engine's own functions are not starved by calls stuck in a callee
        listed = await asyncio.to_thread(sdk.list_functions)
        assert "slow::never" in {function.function_id for function in listed}
        channel = await asyncio.to_thread(sdk.create_channel)
        assert channel.writer_ref.channel_id == channel.reader_ref.channel_id
        # a call of another worker function is refused, naming the function that holds them and the way out
        with pytest.raises(InvocationError) as refused:
            await asyncio.to_thread(sdk.trigger, {"function_id": "slow::other", "payload": {}, "timeout_ms": 5000})
        assert refused.value.code == "too_many_calls"
        assert refused.value.message.endswith(
            f"has {LIMIT} calls of worker functions in flight (max_calls_per_worker {LIMIT}), {LIMIT} of them to "
            "slow::never: a call counts until its callee answers it or a side disconnects, not when its caller stops "
            "waiting (set invocation_timeout_ms to end calls a callee never answers)"), refused.value.message
    finally:
        await asyncio.to_thread(sdk.shutdown)


async def test_built_in_calls_keep_a_bound_of_their_own(bounded: Engine) -> None:
    gate = asyncio.Event()
    started = 0

    async def slow(data: Any, ctx: InvocationContext) -> Any:
        nonlocal started
        started += 1
        await gate.wait()
        return "done"

    bounded.register_function(BuiltinFunction("test::slow", slow))
    callee = await _callee(bounded, "slow::never")
    caller = await RawWorker.connect(bounded.url)
    connection = bounded.workers[caller.worker_id]
    for frame in (_invoke("slow::never"), _invoke("slow::never"), _invoke("slow::never", void=True)):
        await caller.send(frame)
        await callee.expect("invokefunction")
    built_in = [_invoke("test::slow") for _ in range(LIMIT)]
    for frame in built_in:
        await caller.send(frame)
    await caller.sync()
    assert started == LIMIT  # none refused: the calls stuck in the callee do not count against them
    assert (connection.calls, connection.builtin_calls) == (2 * LIMIT, LIMIT)
    # the flooding worker is still bounded: one more of either kind is refused
    refused = await caller.call("test::slow")
    assert refused["error"] == {"code": "too_many_calls", "message": f"worker {caller.worker_id} has {LIMIT} built-in "
                                f"calls and enqueue actions in flight (max_calls_per_worker {LIMIT})"}
    assert (await caller.call("slow::never"))["error"]["code"] == "too_many_calls"
    assert started == LIMIT and len(bounded.invocations.pending) == LIMIT
    gate.set()
    for frame in built_in:
        assert (await caller.expect("invocationresult", invocation_id=frame["invocation_id"]))["result"] == "done"
    await caller.sync()
    assert (connection.calls, connection.builtin_calls) == (LIMIT, 0)


async def test_the_refusal_names_the_function_holding_most_and_the_invocation_timeout() -> None:
    async with _engine(invocation_timeout_ms=60_000) as engine:
        callee = await _callee(engine, "slow::a", "slow::b")
        caller = await RawWorker.connect(engine.url)
        for function_id in ("slow::b", "slow::a", "slow::a"):
            await caller.send(_invoke(function_id))
            await callee.expect("invokefunction", function_id=function_id)
        refused = await caller.call("slow::b")
        assert refused["error"]["message"] == (
            f"worker {caller.worker_id} has {LIMIT} calls of worker functions in flight (max_calls_per_worker "
            f"{LIMIT}), 2 of them to slow::a (the rest to 1 other function): a call counts until its callee answers "
            "it, a side disconnects or invocation_timeout_ms 60000 runs out, not when its caller stops waiting")


async def test_a_call_stopped_by_its_callee_leaving_names_the_function_and_the_cause(bounded: Engine) -> None:
    callee = await _callee(bounded, "slow::never")
    call = asyncio.ensure_future(bounded.invoke("slow::never", None))  # an engine-internal call (a trigger's)
    await callee.expect("invokefunction")
    await callee.close()
    with pytest.raises(EngineError) as stopped:
        await asyncio.wait_for(call, 5)
    assert (stopped.value.code, stopped.value.message) == (
        "invocation_stopped",
        "Invocation of slow::never stopped: its callee's worker disconnected before answering; the call may have run")


async def test_a_call_stopped_by_the_engine_stopping_says_so() -> None:
    engine = _engine()
    await engine.start()
    try:
        callee = await _callee(engine, "slow::never")
        call = asyncio.ensure_future(engine.invoke("slow::never", None))
        await callee.expect("invokefunction")
        await engine.invocations.close()  # as the engine's stop does
        with pytest.raises(EngineError) as stopped:
            await asyncio.wait_for(call, 5)
        assert (stopped.value.code, stopped.value.message) == (
            "invocation_stopped", "Invocation of slow::never stopped: the engine is stopping")
    finally:
        await engine.stop()
