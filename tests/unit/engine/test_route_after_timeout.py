"""A routed call that ends while it waits for room in its callee's queue is not sent afterwards.

Before: the call's frame went out once room came, though its caller had already been answered ``invocation_timeout``
(or had left): the callee ran a call whose outcome nobody took, and a caller retrying after the timeout had it run
twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig
from tests.polling import until

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], invocation_timeout_ms=300)
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


async def _full_callee(engine: Engine) -> tuple[Any, Any, Callable[[], None]]:
    """A callee whose queue is full (as when it stops reading) until the returned callable makes room."""
    callee = await _connect(engine)
    await callee.send(dumps({"type": "registerfunction", "id": "w.full"}))
    await _sync(callee)
    outbox = next(iter(engine.workers.values())).outbox
    room = asyncio.Event()
    real_full = outbox._full
    outbox._full = lambda size: not room.is_set() or real_full(size)  # type: ignore[method-assign]

    def make_room() -> None:
        room.set()
        outbox.wake_waiters()

    return callee, outbox, make_room


async def test_a_call_that_timed_out_waiting_for_room_is_never_sent(engine: Engine) -> None:
    callee, outbox, make_room = await _full_callee(engine)
    caller = await _connect(engine)
    try:
        await caller.send(dumps({"type": "invokefunction", "invocation_id": "7d9f0a4e-0000-4000-8000-000000000001",
                                 "function_id": "w.full", "data": {"n": 1}}))
        await until(lambda: outbox.waiting == 1)
        answer = loads(await asyncio.wait_for(caller.recv(), 5))
        assert answer["type"] == "invocationresult" and answer["error"]["code"] == "invocation_timeout"
        # The call's wait for room ended with it: the caller's connection is read again while the queue is full
        # (before, its ping waited until room came).
        assert await _sync(caller) == []
        assert outbox.waiting == 0
        make_room()
        assert [f for f in await _sync(callee) if f["type"] == "invokefunction"] == []
        assert not engine.invocations.pending
    finally:
        await caller.close()
        await callee.close()


@pytest.mark.parametrize("leave", ["close", "abort"])
async def test_a_caller_that_leaves_while_its_call_waits_for_room_is_cleaned_up_at_once(leave: str) -> None:
    # The caller's frames are not read while its call waits (production's back-pressure). Before, its leaving was
    # seen only once the call ended: with no invocation_timeout_ms, when the callee made room or left, and the worker
    # that left stayed listed (its functions routed to) until then. Now the loss of its connection ends the call.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:  # no call times out
        callee, outbox, make_room = await _full_callee(engine)
        caller = await _connect(engine)
        await caller.send(dumps({"type": "registerfunction", "id": "w.leaving"}))
        await _sync(caller)
        await caller.send(dumps({"type": "invokefunction", "invocation_id": "7d9f0a4e-0000-4000-8000-000000000002",
                                 "function_id": "w.full", "data": {"n": 2}}))
        await until(lambda: outbox.waiting == 1)
        if leave == "close":
            await caller.close()
        else:  # no Close frame: the TCP connection just goes
            caller.transport.abort()
        try:
            await until(lambda: len(engine.workers) == 1)  # only the callee is left; its queue is still full
            assert "w.leaving" not in engine.registry.functions
            assert not engine.invocations.pending and not outbox.waiting
            make_room()
            assert [f for f in await _sync(callee) if f["type"] == "invokefunction"] == []
        finally:
            await callee.close()


async def test_a_call_still_live_keeps_waiting_and_is_sent_once_room_comes() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:  # no call times out
        await _one_call_of_two_ends(engine)


async def _one_call_of_two_ends(engine: Engine) -> None:
    callee, outbox, make_room = await _full_callee(engine)
    caller = await _connect(engine)
    try:
        first = asyncio.ensure_future(engine.start_invocation("w.full", {"n": 0}))  # an engine-internal call
        await caller.send(dumps({"type": "invokefunction", "function_id": "w.full", "data": {"n": 1},
                                 "invocation_id": "7d9f0a4e-0000-4000-8000-000000000011"}))
        await until(lambda: outbox.waiting == 2)
        first.cancel()  # ends the first call: both waits wake, the second's call is live and waits on
        await until(lambda: outbox.waiting == 1)
        make_room()
        sent = [f for f in await _sync(callee) if f["type"] == "invokefunction"]
        assert [f["data"]["n"] for f in sent] == [1]
    finally:
        await caller.close()
        await callee.close()
