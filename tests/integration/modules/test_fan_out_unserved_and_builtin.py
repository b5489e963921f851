"""A fan-out takes no max_fired_calls slot for a trigger of a function nobody serves, and at most one
max_fired_calls_per_worker share of slots for triggers of built-in functions.

Before, within_callee_shares kept every trigger whose function had no worker owner: with max_fired_calls 40, one
worker's 41 catch-all state triggers (or 41 subscriptions to a topic) of ``ghost::nobody`` or of
``engine::functions::list`` made 3 of 3 state::set calls (3 of 3 publishes) fail at once with fire_limit ("none of
its 42 state trigger handlers reached: more than max_fired_calls 40"), the writer's own trigger (the other
subscriber) getting 0 of 3.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import counters_left
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls_per_worker share")]

LIMIT = 40
SHARE = LIMIT // 4  # the default share: a quarter of max_fired_calls
FLOOD = LIMIT + 1
WRITES = 3
GHOST = "ghost::nobody"
BUILTIN = "engine::functions::list"


def engine_with(module: str) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, max_fired_calls=LIMIT, fire_wait_timeout_ms=1_000,
                                      modules=[ModuleSpec(module)]))


def check_counts(engine: Engine, target: str) -> None:
    """Those of a ghost: each counted as a fired call of a function nobody serves, none past a share; those of a
    built-in: one share kept per fan-out, the rest not made, counted past the share."""
    stats = engine.fired_calls.stats()
    assert stats["refused"] == 0
    if target == GHOST:
        assert engine.invocations.missing_fired == WRITES * FLOOD
        assert stats["skipped_callee_share"] == 0
    else:
        assert engine.invocations.missing_fired == 0
        assert stats["skipped_callee_share"] == WRITES * (FLOOD - SHARE)


@pytest.mark.parametrize("target", [GHOST, BUILTIN])
async def test_catch_all_state_triggers_of_unserved_or_builtin_functions_leave_writes_and_triggers(
        target: str) -> None:
    got: list[Any] = []

    async def seen(data: Any) -> None:
        got.append(data["new_value"])

    async with engine_with("modules::state::StateModule") as engine, ModuleWorker(engine.url) as victim, \
            ModuleWorker(engine.url) as attacker:
        await victim.function("v::on_change", seen)
        await victim.trigger("v-orders", "state", "v::on_change", {"scope": "orders"})
        for i in range(FLOOD):
            await attacker.send({"type": "registertrigger", "id": f"a-{i}", "trigger_type": "state",
                                 "function_id": target, "config": {}})
        await attacker.sync()
        for value in range(WRITES):
            started = time.monotonic()
            frame = await victim.call("state::set", {"scope": "orders", "key": "o1", "value": value})
            # before: fire_limit at once, "none of its 42 state trigger handlers reached"
            assert "error" not in frame, frame
            assert time.monotonic() - started < 0.9
        await until(lambda: len(got) == WRITES)
        assert got == list(range(WRITES))
        await until(lambda: not counters_left(engine))
        check_counts(engine, target)


@pytest.mark.parametrize("target", [GHOST, BUILTIN])
async def test_subscriptions_of_unserved_or_builtin_functions_leave_other_subscribers_their_messages(
        target: str) -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def good(data: Any) -> None:
        await received.put(data)

    async with engine_with("modules::pubsub::PubSubModule") as engine, ModuleWorker(engine.url) as victim, \
            ModuleWorker(engine.url) as attacker, ModuleWorker(engine.url) as publisher:
        await victim.function("v::sub", good)
        await victim.trigger("v-orders", "subscribe", "v::sub", {"topic": "orders"})
        for i in range(FLOOD):
            await attacker.send({"type": "registertrigger", "id": f"a{i}", "trigger_type": "subscribe",
                                 "function_id": target, "config": {"topic": "orders"}})
        await attacker.sync()
        for n in range(WRITES):
            frame = await publisher.call("publish", {"topic": "orders", "data": n})
            # before: none reached, "more than max_fired_calls 40"
            assert await asyncio.wait_for(received.get(), 2) == n
            if target == GHOST:
                assert "error" not in frame, frame
            else:  # told, as for any subscriber past its callee's share
                assert frame["error"]["message"].startswith(
                    f"publish: {FLOOD - SHARE} of the trigger-fired calls it set off not made (the others were): the "
                    f"call of {BUILTIN}: worker (the engine's built-in functions) has {SHARE} trigger-fired calls"), \
                    frame
        await until(lambda: not counters_left(engine))
        check_counts(engine, target)


async def test_a_function_registered_after_its_trigger_is_called_by_the_next_write() -> None:
    """A trigger left out while nobody serves its function is not dropped: once served, the next write calls it."""
    late: list[Any] = []

    async def on_change(data: Any) -> None:
        late.append(data["new_value"])

    async with engine_with("modules::state::StateModule") as engine, ModuleWorker(engine.url) as worker:
        await worker.trigger("late", "state", "late::on_change", {"scope": "s"})
        frame = await worker.call("state::set", {"scope": "s", "key": "k", "value": 0})
        assert "error" not in frame, frame
        assert engine.invocations.missing_fired == 1
        await worker.function("late::on_change", on_change)
        frame = await worker.call("state::set", {"scope": "s", "key": "k", "value": 1})
        assert "error" not in frame, frame
        await until(lambda: late == [1])
        await until(lambda: not counters_left(engine))
        assert engine.invocations.missing_fired == 1
