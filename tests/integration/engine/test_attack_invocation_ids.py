"""Attack on the engine-made invocation ids (f731efb): a worker that saw one must not be able to predict the next.

A worker's ``invokefunction`` may carry any invocation id, and one equal to a call still pending takes that call's
place in the pending table (the engine only logs it). So if the ids the engine makes for its own calls (REST API,
triggers, cron, queues, ``engine.invoke``) can be predicted, a worker that saw one of them (every callee does)
can take over a later call to another worker's function: that worker's answer then comes to it, and the engine's
caller waits in vain. uuid4 ids could not be predicted; the prefix-and-counter ids could.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from iii_engine import Engine
from iii_engine.invocations import InvocationIds, is_uuid
from iii_engine.modules.base import EngineError

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our invocation ids")]


def _next_by_counter(seen: str) -> str:
    """The id a prefix-and-counter source hands out after ``seen``."""
    return f"{seen[:24]}{int(seen[24:], 16) + 1:012x}"


def test_an_id_does_not_tell_the_next_one() -> None:
    ids = InvocationIds()
    values = [ids() for _ in range(1000)]
    assert all(is_uuid(v) for v in values) and len(set(values)) == 1000
    assert not any(_next_by_counter(a) == b for a, b in itertools.pairwise(values))
    # nothing shared between consecutive ids beyond the version and variant digits a UUID fixes
    assert len({v[:24] for v in values}) == 1000


async def test_a_worker_cannot_take_over_the_engines_next_call(engine: Engine) -> None:
    attacker = await RawWorker.connect(engine.url)
    victim = await RawWorker.connect(engine.url)
    try:
        await attacker.register("attacker::probe")
        await victim.register("victim::secret")
        await attacker.sync()
        await victim.sync()

        # the attacker sees one engine-made id (any call the engine makes to it) ...
        probe = asyncio.ensure_future(engine.invoke("attacker::probe", None, timeout_s=5))
        seen = (await attacker.serve_one({"ok": True}))["invocation_id"]
        assert await probe == {"ok": True}

        # ... and claims the one the engine's next call will use, for a call of its own to the victim
        secret = asyncio.ensure_future(engine.invoke("victim::secret", "engine's own call", timeout_s=5))
        engine_call = await victim.expect("invokefunction")
        await attacker.send({"type": "invokefunction", "invocation_id": _next_by_counter(seen),
                             "function_id": "victim::secret", "data": "attacker's call"})
        attacker_call = await victim.expect("invokefunction")
        assert engine_call["invocation_id"] != attacker_call["invocation_id"], "the engine's id was predicted"
        for request in (engine_call, attacker_call):
            await victim.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                               "function_id": "victim::secret", "result": {"for": request["data"]}})
        assert await secret == {"for": "engine's own call"}
        answer = await attacker.expect("invocationresult", invocation_id=_next_by_counter(seen))
        assert answer["result"] == {"for": "attacker's call"}  # its own answer, never the engine's
    finally:
        await attacker.close()
        await victim.close()


async def test_a_callee_cannot_orphan_the_call_it_serves_by_reusing_its_id(engine: Engine) -> None:
    # The callee of an engine call knows its id. Claiming it for a call of its own took the engine's call out of
    # the pending table: the callee's disconnect then stopped the claim instead, and the engine's call (one
    # without a timeout, as a trigger's or a queue job's) waited forever. Now the claim is refused.
    callee = await RawWorker.connect(engine.url)
    other = await RawWorker.connect(engine.url)
    try:
        await callee.register("callee::f")
        await other.register("other::g")
        await callee.sync()
        await other.sync()
        call = asyncio.ensure_future(engine.invoke("callee::f", None))  # no timeout of its own
        request = await callee.expect("invokefunction")
        await callee.send({"type": "invokefunction", "invocation_id": request["invocation_id"],
                           "function_id": "other::g", "data": None})
        refused = await callee.expect("invocationresult", invocation_id=request["invocation_id"])
        assert refused["error"]["code"] == "invocation_id_in_use", refused
        await callee.close()  # the callee leaves without answering: the engine's call stops
        with pytest.raises(EngineError) as stopped:
            await asyncio.wait_for(call, 5)
        assert stopped.value.code == "invocation_stopped"
    finally:
        await callee.close()
        await other.close()
