"""Invocations.start_invoke (issue 10): a built-in call starts without a coroutine for the reader to await, a
routed call hands the reader the coroutine that waits for room in the callee's queue (back-pressure, frame
order); the per-call context and events stay immutable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.protocol.worker_session import Invoke, Result, WorkerSession
from iii.wire import loads
from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction, InvocationContext
from iii_engine.registry import FunctionEntry
from iii_engine.workers import Outbox, WorkerConnection

CALL_ID = "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"


def _worker(sent: list[str], *, limit: int = 64, arrived: asyncio.Queue[str] | None = None) -> WorkerConnection:
    async def send(text: str) -> None:
        sent.append(text)
        if arrived is not None:
            arrived.put_nowait(text)

    return WorkerConnection(outbox=Outbox(send, limit=limit))


async def test_builtin_call_needs_no_awaiting() -> None:
    seen: list[InvocationContext] = []

    async def echo(data: Any, ctx: InvocationContext) -> Any:
        seen.append(ctx)
        return data

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.registry.add_function(FunctionEntry("t::echo", builtin=BuiltinFunction("t::echo", echo)))
        arrived: asyncio.Queue[str] = asyncio.Queue()
        caller = _worker([], arrived=arrived)
        engine.workers[caller.id] = caller
        event = caller.session.receive(f'{{"type":"invokefunction","invocation_id":"{CALL_ID}",'
                                       '"function_id":"t::echo","data":{"x":1}}')
        assert isinstance(event, Invoke)
        assert engine.invocations.start_invoke(caller, event.message) is None
        reply = loads(await asyncio.wait_for(arrived.get(), 10))
        await caller.outbox.close()
    assert (reply["invocation_id"], reply["result"]) == (CALL_ID, {"x": 1, "_caller_worker_id": caller.id})
    assert seen == [InvocationContext(caller.id, CALL_ID)]
    with pytest.raises(AttributeError):
        seen[0].invocation_id = "other"  # type: ignore[misc]


async def test_routed_call_returns_its_wait_for_room() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        sent: list[str] = []
        callee = _worker(sent, limit=1)
        engine.workers[callee.id] = callee
        engine.registry.add_function(FunctionEntry("t::work", owner=callee.id))
        caller = _worker([])
        engine.workers[caller.id] = caller
        callee.post('{"type":"pong"}')  # the callee's queue is full (limit 1) until its sender runs
        message = {"function_id": "t::work", "data": {}, "invocation_id": CALL_ID}
        routed = engine.invocations.start_invoke(caller, message)
        assert routed is not None and asyncio.iscoroutine(routed)
        await asyncio.wait_for(routed, 10)  # the sender drains the pong, then there is room
        assert CALL_ID in engine.invocations.pending  # written and waiting for the callee's answer
        await callee.outbox.close()
        assert [loads(text)["type"] for text in sent] == ["pong", "invokefunction"]  # in order
        await engine.invocations.close()


def test_events_of_the_call_path_are_immutable() -> None:
    event = WorkerSession("w").receive(f'{{"type":"invocationresult","invocation_id":"{CALL_ID}",'
                                       '"function_id":"f","result":1}')
    assert isinstance(event, Result) and event.verbatim is not None
    with pytest.raises(AttributeError):
        event.verbatim = None  # type: ignore[misc]
