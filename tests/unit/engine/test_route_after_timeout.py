"""A routed call that ends while it waits for room in its callee's queue is not sent afterwards.

Before: the call's frame went out once room came, though its caller had already been answered ``invocation_timeout``
(or had left): the callee ran a call whose outcome nobody took, and a caller retrying after the timeout had it run
twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig
from tests.polling import until

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], invocation_timeout_ms=200)
    async with Engine(config=config) as started:
        yield started


async def _connect(engine: Engine) -> Any:
    ws = await websockets.connect(engine.url, compression=None)
    assert loads(await ws.recv())["type"] == "workerregistered"
    return ws


async def _sync(ws: Any) -> list[dict[str, Any]]:
    """Frames the worker received before the engine answered a ping (everything sent to it until now)."""
    await ws.send(dumps({"type": "ping"}))
    seen = []
    while (frame := loads(await ws.recv()))["type"] != "pong":
        seen.append(frame)
    return seen


async def _full_callee(engine: Engine) -> tuple[Any, asyncio.Event, asyncio.Event]:
    callee = await _connect(engine)
    await callee.send(dumps({"type": "registerfunction", "id": "w.full"}))
    await _sync(callee)
    worker = next(iter(engine.workers.values()))
    room, waiting = asyncio.Event(), asyncio.Event()
    real_wait = worker.outbox.wait_for_room

    async def wait_for_room(size: int = 0) -> None:  # the callee's queue is full until `room` is set
        waiting.set()
        await room.wait()
        await real_wait(size)

    worker.outbox.wait_for_room = wait_for_room  # type: ignore[method-assign]
    return callee, room, waiting


async def test_a_call_that_timed_out_waiting_for_room_is_never_sent(engine: Engine) -> None:
    callee, room, waiting = await _full_callee(engine)
    caller = await _connect(engine)
    try:
        await caller.send(dumps({"type": "invokefunction", "invocation_id": "7d9f0a4e-0000-4000-8000-000000000001",
                                 "function_id": "w.full", "data": {"n": 1}}))
        await asyncio.wait_for(waiting.wait(), 5)
        answer = loads(await asyncio.wait_for(caller.recv(), 5))
        assert answer["type"] == "invocationresult" and answer["error"]["code"] == "invocation_timeout"
        room.set()
        assert [f for f in await _sync(callee) if f["type"] == "invokefunction"] == []
        assert not engine.invocations.pending
    finally:
        await caller.close()
        await callee.close()


async def test_a_call_whose_caller_left_while_it_waited_for_room_is_never_sent(engine: Engine) -> None:
    callee, room, waiting = await _full_callee(engine)
    caller = await _connect(engine)
    await caller.send(dumps({"type": "invokefunction", "invocation_id": "7d9f0a4e-0000-4000-8000-000000000002",
                             "function_id": "w.full", "data": {"n": 2}}))
    await asyncio.wait_for(waiting.wait(), 5)
    await caller.close()
    try:
        await until(lambda: not engine.invocations.pending)  # the caller's leaving stops its call
        room.set()
        assert [f for f in await _sync(callee) if f["type"] == "invokefunction"] == []
    finally:
        await callee.close()
