"""A worker's ``invocationresult`` for the id of its own built-in call leaves that id in its in-flight set. Before, it
took the id out, the id could then be reused for a routed call, and the built-in call's end took that call out of
the set too: a caller sending (built-in call X, result X, call X of a silent callee) and leaving left every such
call pending for good, up to ``max_calls_per_worker`` more at each reconnect (996 → 4,990 over 5 rounds of 1,000)."""

from __future__ import annotations

import uuid

import pytest

from iii_engine import Engine

from .raw import RawWorker, counters_left, disconnect

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the engine's in-flight sets")]


async def test_calls_under_a_reused_builtin_id_end_with_their_callers_disconnect(engine: Engine) -> None:
    sink = await RawWorker.connect(engine.url)
    await sink.register("stray::sink")
    await sink.sync()
    try:
        for _ in range(2):
            caller = await RawWorker.connect(engine.url)
            for _ in range(100):
                x = str(uuid.uuid4())
                await caller.send({"type": "invokefunction", "invocation_id": x,
                                   "function_id": "engine::workers::list", "data": {}})
                await caller.send({"type": "invocationresult", "invocation_id": x,
                                   "function_id": "engine::workers::list"})
                await caller.send({"type": "invokefunction", "invocation_id": x, "function_id": "stray::sink",
                                   "data": {}})
            last = str(uuid.uuid4())
            await caller.send({"type": "invokefunction", "invocation_id": last,
                               "function_id": "engine::workers::list", "data": {}})
            await caller.expect("invocationresult", invocation_id=last)  # every frame before it was read
            await disconnect(engine, caller)
            # the sink never answers: only its caller's disconnect can end what reached it
            assert engine.invocations.pending == {}
            assert engine.workers[sink.worker_id].in_flight == set()
        assert {k: v for k, v in counters_left(engine).items() if k.startswith(sink.worker_id)} == {}
    finally:
        await sink.close()


async def test_a_workers_disconnect_never_ends_another_workers_call_under_the_same_id(engine: Engine) -> None:
    """Worker B's call to C and worker A's built-in call under one id (a client choosing ids): A's disconnect ends
    nothing of B's (a first version of the mend above left the id in A's calls and ended B's call)."""
    a, b, c = [await RawWorker.connect(engine.url) for _ in range(3)]
    try:
        await c.register("shared::work")
        await c.sync()
        x = str(uuid.uuid4())
        await b.send({"type": "invokefunction", "invocation_id": x, "function_id": "shared::work", "data": {}})
        await c.expect("invokefunction", invocation_id=x)
        await a.send({"type": "invokefunction", "invocation_id": x, "function_id": "engine::functions::list",
                      "data": {}})
        await a.expect("invocationresult", invocation_id=x)
        assert x not in engine.workers[a.worker_id].in_flight
        await disconnect(engine, a)
        assert x in engine.invocations.pending  # B's call goes on
        await c.send({"type": "invocationresult", "invocation_id": x, "function_id": "shared::work",
                      "result": {"ok": 1}})
        answer = await b.expect("invocationresult", invocation_id=x)
        assert answer.get("result") == {"ok": 1} and "error" not in answer
    finally:
        await b.close()
        await c.close()
