"""A worker's ``invocationresult`` that cannot be decoded ends the call it plainly answers with ``invalid_result``.

Before: the frame was dropped with a warning and the call stayed pending; with no ``invocation_timeout_ms`` (the
default, as in production) its caller waited for good and the call held a ``max_calls_per_worker`` count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig

pytestmark = pytest.mark.timeout(20)

CALL_ID = "7d9f0a4e-0000-4000-8000-0000000000a1"


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as started:
        yield started


async def _connect(engine: Engine) -> Any:
    ws = await websockets.connect(engine.url, compression=None)
    assert loads(await ws.recv())["type"] == "workerregistered"
    return ws


async def _next(ws: Any, kind: str) -> dict[str, Any]:
    while (frame := loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != kind:
        pass
    return frame


def _answer(body: str) -> str:
    """An ``invocationresult`` text for ``CALL_ID`` with ``body`` as the rest of its fields (not built by dumps)."""
    return '{"type":"invocationresult","invocation_id":"' + CALL_ID + '",' + body + "}"


async def _call_answered_with(engine: Engine, answer: str) -> dict[str, Any]:
    callee, caller = await _connect(engine), await _connect(engine)
    try:
        await callee.send(dumps({"type": "registerfunction", "id": "w.f"}))
        await callee.send(dumps({"type": "ping"}))
        await _next(callee, "pong")
        await caller.send(dumps({"type": "invokefunction", "invocation_id": CALL_ID, "function_id": "w.f",
                                 "data": {}}))
        assert (await _next(callee, "invokefunction"))["invocation_id"] == CALL_ID
        await callee.send(answer)
        return await _next(caller, "invocationresult")
    finally:
        await caller.close()
        await callee.close()


@pytest.mark.parametrize("answer", [
    # not JSON under the one policy: NaN, a lone surrogate escape
    _answer('"function_id":"w.f","result":NaN'),
    _answer('"function_id":"w.f","result":"\\ud800"'),
    # JSON, but not a result frame
    _answer('"function_id":7,"result":1'),
], ids=["nan", "lone-surrogate", "bad-field"])
async def test_an_undecodable_result_ends_its_call_with_invalid_result(engine: Engine, answer: str) -> None:
    result = await _call_answered_with(engine, answer)
    assert result["invocation_id"] == CALL_ID
    assert result["error"]["code"] == "invalid_result"
    assert "could not be decoded" in result["error"]["message"]
    assert not engine.invocations.pending


async def test_an_undecodable_result_from_another_worker_ends_nothing(engine: Engine) -> None:
    callee, caller, other = await _connect(engine), await _connect(engine), await _connect(engine)
    try:
        await callee.send(dumps({"type": "registerfunction", "id": "w.f"}))
        await callee.send(dumps({"type": "ping"}))
        await _next(callee, "pong")
        await caller.send(dumps({"type": "invokefunction", "invocation_id": CALL_ID, "function_id": "w.f",
                                 "data": {}}))
        await _next(callee, "invokefunction")
        await other.send(_answer('"result":NaN'))
        await other.send(dumps({"type": "ping"}))
        await _next(other, "pong")  # the bad frame was handled before the ping
        assert CALL_ID in engine.invocations.pending
        await callee.send(dumps({"type": "invocationresult", "invocation_id": CALL_ID, "function_id": "w.f",
                                 "result": 5}))
        assert (await _next(caller, "invocationresult"))["result"] == 5
    finally:
        for ws in (caller, callee, other):
            await ws.close()
