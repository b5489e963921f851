"""A fan-out (a state write's triggers, a publish's subscribers) takes max_fired_calls slots only for the calls
whose callee worker has room in its max_fired_calls_per_worker share: one worker's many triggers no longer stop
every other worker's triggers, nor fail the writer.

Before, the take was for every matching trigger, those past their worker's share too: one worker's 10,001
catch-all state triggers (config {}) made every state::set of any worker fail at once with fire_limit ("more than
max_fired_calls"), the victim's own trigger getting 0 of 3 writes; with 8,000 whose worker never answered, every
write after the first waited fire_wait_timeout_ms (10 s) and failed, the victim's trigger getting 1 of 3. A topic
subscribed 10,001 times by one worker did the same to every publish to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls_per_worker share")]

LIMIT = 40
SHARE = LIMIT // 4  # the default share: a quarter of max_fired_calls
WRITES = 3


async def never(data: Any) -> None:
    """A handler that never answers (its worker still reads its frames)."""
    await asyncio.Event().wait()


def engine_with(module: str) -> Engine:
    # a short wait, so that before the fix the writes past the first fail in 1 s each rather than in 10 s
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, max_fired_calls=LIMIT, fire_wait_timeout_ms=1_000,
                                      modules=[ModuleSpec(module)]))


# one worker with more triggers than max_fired_calls (before: every write failed at once); one with fewer but more
# than its share, and three with a share each that never answer (before: every write after the first waited
# fire_wait_timeout_ms and failed)
@pytest.mark.parametrize(("workers", "flood"), [(1, LIMIT + 1), (1, 3 * SHARE), (3, SHARE + 1)])
async def test_catch_all_state_triggers_of_hung_workers_leave_others_their_triggers_and_writes(
        workers: int, flood: int) -> None:
    got: list[Any] = []

    async def seen(data: Any) -> None:
        got.append(data["new_value"])

    async with engine_with("modules::state::StateModule") as engine, ModuleWorker(engine.url) as victim, \
            contextlib.AsyncExitStack() as stack:
        await victim.function("v::on_change", seen)
        await victim.trigger("v-orders", "state", "v::on_change", {"scope": "orders"})
        for w in range(workers):
            attacker = await stack.enter_async_context(ModuleWorker(engine.url))
            await attacker.function(f"a{w}::sink", never)
            for i in range(flood):
                await attacker.send({"type": "registertrigger", "id": f"a{w}-{i}", "trigger_type": "state",
                                     "function_id": f"a{w}::sink", "config": {}})
            await attacker.sync()
        for value in range(WRITES):
            started = time.monotonic()
            frame = await victim.call("state::set", {"scope": "orders", "key": "o1", "value": value})
            # before: fire_limit, at once (flood > LIMIT) or after the 1 s wait (from the second write on)
            assert "error" not in frame, frame
            assert time.monotonic() - started < 0.9
        await until(lambda: len(got) == WRITES)
        assert got == list(range(WRITES))
        # each attacker's worker holds its share, never more; the rest of its calls were not made, counted
        await until(lambda: engine.fired_calls.in_flight == workers * SHARE)
        stats = engine.fired_calls.stats()
        assert stats["busiest_callee"] == SHARE
        assert stats["skipped_callee_share"] == workers * (WRITES * flood - SHARE)
        assert stats["refused"] == 0
        assert engine.fired_calls._waiters == {}


async def test_one_workers_subscriptions_to_a_topic_leave_its_other_subscribers_their_messages() -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def good(data: Any) -> None:
        await received.put(data)

    flood = LIMIT + 1
    async with engine_with("modules::pubsub::PubSubModule") as engine, ModuleWorker(engine.url) as victim, \
            ModuleWorker(engine.url) as attacker, ModuleWorker(engine.url) as publisher:
        await victim.function("v::sub", good)
        await victim.trigger("v-orders", "subscribe", "v::sub", {"topic": "orders"})
        await attacker.function("a::sink", never)
        for i in range(flood):
            await attacker.send({"type": "registertrigger", "id": f"a{i}", "trigger_type": "subscribe",
                                 "function_id": "a::sink", "config": {"topic": "orders"}})
        await attacker.sync()
        attacker_id = next(w.id for w in engine.workers.values() if "a::sink" in w.functions)
        for n in range(WRITES):
            frame = await publisher.call("publish", {"topic": "orders", "data": n})
            # before: none reached, "more than max_fired_calls 40 trigger-fired calls at once"
            assert await asyncio.wait_for(received.get(), 2) == n
            # the publisher hears, as for any subscriber past its share, which calls were not made and why
            not_made = flood - SHARE if n == 0 else flood
            assert frame.get("error", {}).get("code") == "fire_limit", frame
            assert frame["error"]["message"].startswith(
                f"publish: {not_made} of the trigger-fired calls it set off not made (the others were): the call of "
                f"a::sink: worker {attacker_id} has {SHARE} trigger-fired calls in flight (max_fired_calls_per_worker "
                f"{SHARE})"), frame
        await until(lambda: engine.fired_calls.in_flight == SHARE)
        stats = engine.fired_calls.stats()
        assert stats["skipped_callee_share"] == WRITES * flood - SHARE
        assert stats["refused"] == 0
