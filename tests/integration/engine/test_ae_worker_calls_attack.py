"""Attack A-E on max_calls_per_worker (iii_engine.limits.WorkerCalls): calls ending every way, from real
WebSocket clients, thousands at once; the count of every worker must come back to 0 (never below, never above
the bound), every answered call must get exactly one answer, and a worker at the bound must not hold up others.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction, InvocationContext
from iii_engine.workers import WorkerConnection

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our max_calls_per_worker bound")]


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait until ``condition()`` holds (engine-side counters that no frame reports)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def _inner_cancelled(data: Any, ctx: InvocationContext) -> Any:
    """A built-in whose own await ends in CancelledError although its task was not cancelled (an inner future
    someone else cancelled)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    return await future


async def test_a_built_in_ending_in_an_inner_cancellation_answers_internal_error(engine: Engine) -> None:
    # Before: the CancelledError went through the built-in's task: the caller never got an answer (nothing said
    # so) and the call's id stayed in the worker's in-flight set for good.
    engine.register_function(BuiltinFunction("test::inner_cancelled", _inner_cancelled))
    caller = await RawWorker.connect(engine.url)
    answer = await caller.call("test::inner_cancelled", {})
    assert answer["error"]["code"] == "internal_error", answer
    assert "CancelledError" in answer["error"]["message"]
    connection = engine.workers[caller.worker_id]
    assert (connection.calls, connection.in_flight) == (0, set())
    # an engine-internal call of it fails the same way (and is not taken for its caller's own cancellation)
    with pytest.raises(Exception, match="internal_error"):
        await engine.invoke("test::inner_cancelled", {})


async def test_an_enqueue_ending_in_an_inner_cancellation_answers_enqueue_error(engine: Engine) -> None:
    class Queues:
        async def enqueue(self, queue_name: str, function_id: str, data: Any) -> str:
            return str(await _inner_cancelled(data, InvocationContext(None, None, None, None)))

    engine.serve_named_queues(Queues())
    caller = await RawWorker.connect(engine.url)
    answer = await caller.call("any::fn", {}, action={"type": "enqueue", "queue": "jobs"})
    assert answer["error"]["code"] == "enqueue_error", answer
    await until(lambda: engine.workers[caller.worker_id].calls == 0)
