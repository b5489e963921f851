"""Attack A-E on max_calls_per_worker: invocation ids a worker reuses for built-in calls.

The engine knows which calls a worker takes part in through ``WorkerConnection.in_flight`` (ids of calls it made
and calls routed to it): a worker's disconnect stops exactly those. A built-in call added its id to that set and
took it out when it answered, so a built-in call under an id already in the set took the other call's id out
with it. A callee doing that to the call it serves, then leaving without an answer, left that call pending for
ever (no ``invocation_timeout_ms``): its caller waited in vain and, a worker, held one ``max_calls_per_worker``
count for good; ``max_calls_per_worker`` such calls and the worker could call nothing any more.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from iii_engine import Engine
from iii_engine.modules.base import BuiltinFunction, EngineError

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our max_calls_per_worker bound")]

BUILTIN = "engine::functions::list"


def _call(function_id: str, invocation_id: str, data: Any = None) -> dict[str, Any]:
    return {"type": "invokefunction", "invocation_id": invocation_id, "function_id": function_id, "data": data}


async def _callee(engine: Engine) -> RawWorker:
    callee = await RawWorker.connect(engine.url)
    await callee.register("callee::f")
    await callee.sync()
    return callee


async def test_a_callee_cannot_orphan_a_workers_call_by_reusing_its_id_for_a_built_in(engine: Engine) -> None:
    callee = await _callee(engine)
    caller = await RawWorker.connect(engine.url)
    connection = engine.workers[caller.worker_id]
    invocation_id = str(uuid.uuid4())
    await caller.send(_call("callee::f", invocation_id))
    await callee.expect("invokefunction", invocation_id=invocation_id)
    assert connection.calls == 1
    await callee.send(_call(BUILTIN, invocation_id, {}))
    refused = await callee.expect("invocationresult", invocation_id=invocation_id)
    assert refused["error"]["code"] == "invocation_id_in_use", refused
    await _gone(engine, callee)  # leaves without answering: the caller's call stops, its count comes back
    stopped = await caller.expect("invocationresult", invocation_id=invocation_id)
    assert stopped["error"]["code"] == "invocation_stopped"
    assert connection.calls == 0 and not engine.invocations.pending


async def test_a_callee_cannot_orphan_an_engine_call_by_reusing_its_id_for_a_built_in(engine: Engine) -> None:
    callee = await _callee(engine)
    call = asyncio.ensure_future(engine.invoke("callee::f", None))  # no timeout of its own (a trigger's, a job's)
    request = await callee.expect("invokefunction")
    await callee.send(_call(BUILTIN, request["invocation_id"], {}))
    refused = await callee.expect("invocationresult", invocation_id=request["invocation_id"])
    assert refused["error"]["code"] == "invocation_id_in_use", refused
    await callee.close()
    with pytest.raises(EngineError) as stopped:
        await asyncio.wait_for(call, 5)
    assert stopped.value.code == "invocation_stopped"


async def test_a_caller_reusing_its_pending_calls_id_for_a_built_in_is_refused(engine: Engine) -> None:
    # Before: the built-in's answer took the id out of the caller's set, so the caller's disconnect no longer
    # stopped its call: it stayed pending (and held the callee's in-flight entry) until the callee answered.
    callee = await _callee(engine)
    caller = await RawWorker.connect(engine.url)
    invocation_id = str(uuid.uuid4())
    await caller.send(_call("callee::f", invocation_id))
    await callee.expect("invokefunction", invocation_id=invocation_id)
    await caller.send(_call(BUILTIN, invocation_id, {}))
    refused = await caller.expect("invocationresult", invocation_id=invocation_id)
    assert refused["error"]["code"] == "invocation_id_in_use", refused
    await _gone(engine, caller)
    assert not engine.invocations.pending  # stopped with its caller
    assert not engine.workers[callee.worker_id].in_flight


async def test_two_built_in_calls_under_one_id_the_second_is_refused_not_left_unanswered(engine: Engine) -> None:
    # Before: the first answer took the id out of the set, and the second call, finding it gone, was never
    # answered (as for a caller that left).
    gate = asyncio.Event()

    async def slow(data: Any, ctx: Any) -> Any:
        await gate.wait()
        return "done"

    engine.register_function(BuiltinFunction("test::slow", slow))
    caller = await RawWorker.connect(engine.url)
    invocation_id = str(uuid.uuid4())
    await caller.send(_call("test::slow", invocation_id))
    await caller.send(_call("test::slow", invocation_id))
    first = await caller.expect("invocationresult", invocation_id=invocation_id)
    assert first["error"]["code"] == "invocation_id_in_use", first
    gate.set()
    second = await caller.expect("invocationresult", invocation_id=invocation_id)
    assert second["result"] == "done"
    await caller.sync()
    assert engine.workers[caller.worker_id].calls == 0
