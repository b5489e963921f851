"""Attack A-E: max_fired_calls slots held by module tasks that a stop cancels before they ever ran.

A coroutine cancelled before its first step never enters its ``try``, so its ``finally`` (which gives the slots
back) never runs. Invocations.close() already gave back what its own such tasks hold; the pub/sub condition checks
(``_fire_if``), a trigger set's dispatch task (``_run_each``: one slot per matching trigger) and a cron tick's
task (``_fire``) kept theirs past the stop: an engine started again had that many slots fewer, for good (with
``max_fired_calls`` 1, it fired nothing any more). Each test stops the module in the very turn the task was made, as
the engine's stop does (the module's own stop), then stops and starts the same Engine object again. The engine's stop
itself no longer produces the case: it runs in a task of its own and each module's stop in a task too, so the module's
tasks, made before them, run first.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pytest

from iii.iii_types import TriggerInfo
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import BuiltinFunction, EngineModule, InvocationContext
from iii_engine.modules.cron import module as cron_module
from iii_engine.modules.cron.module import CronModule
from iii_engine.modules.pubsub.module import PubSubModule
from iii_engine.modules.state.module import StateModule

M = TypeVar("M", bound=EngineModule)

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our max_fired_calls bound")]


def _engine(module: str, max_fired_calls: int = 10) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(module)],
                                      max_fired_calls=max_fired_calls))


async def _restart_keeps_every_slot(engine: Engine, module: EngineModule) -> None:
    """Stop ``module`` in this turn (its tasks made in this turn are cancelled before their first step), then
    restart the engine: every slot is free."""
    await module.stop()  # the module's own stop, as the engine's calls it: nothing in between yields to its tasks
    assert engine.fired_calls.stats()["in_flight"] == 0
    await engine.stop()
    assert engine.fired_calls.stats()["in_flight"] == 0
    await engine.start()
    assert engine.fired_calls.stats()["in_flight"] == 0
    assert engine.fired_calls.try_take(engine.fired_calls.limit)  # every slot free on the restarted engine
    engine.fired_calls.release(engine.fired_calls.limit)


def _module(engine: Engine, cls: type[M]) -> M:
    module = engine.module(cls.name)
    assert isinstance(module, cls)
    return module


def _recorder(engine: Engine, function_id: str) -> list[Any]:
    """Register a built-in ``function_id`` that returns ``True``; the list of the data it was called with."""
    calls: list[Any] = []

    async def record(data: Any, ctx: InvocationContext) -> bool:
        calls.append(data)
        return True

    engine.register_function(BuiltinFunction(function_id, record))
    return calls


async def test_pubsub_condition_checks_cancelled_at_stop_before_they_ran_give_their_slots_back() -> None:
    # 12: a share (3) for the three subscribers' calls of a built-in (a fan-out keeps one share of those)
    async with _engine("modules::pubsub::PubSubModule", 12) as engine:
        pubsub = _module(engine, PubSubModule)
        checked = _recorder(engine, "sub::cond")
        _recorder(engine, "sub::f")  # served: a subscriber of a function nobody serves takes no slot
        for n in range(3):
            await pubsub.register(TriggerInfo(id=f"t{n}", trigger_type="subscribe", function_id="sub::f",
                                              config={"topic": "news", "condition_function_id": "sub::cond"}))
        # the publish takes a slot per subscriber and starts their condition checks, and the module stops in
        # the same turn (nothing in between yields to them)
        await engine.invoke("publish", {"topic": "news", "data": 1})
        assert engine.fired_calls.stats()["in_flight"] == 3
        await _restart_keeps_every_slot(engine, pubsub)
        assert checked == []  # the checks never ran: the case under test


async def test_state_trigger_dispatch_cancelled_at_stop_before_it_ran_gives_every_slot_back() -> None:
    # 16: a share (4) for the four triggers' calls of a built-in (a fan-out keeps one share of those)
    async with _engine("modules::state::StateModule", 16) as engine:
        state = _module(engine, StateModule)
        handled = _recorder(engine, "on::change")
        for n in range(4):
            await state.triggers.register(TriggerInfo(id=f"t{n}", trigger_type="state", function_id="on::change",
                                                      config={}))
        await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 1})
        assert engine.fired_calls.stats()["in_flight"] == 4  # one task holding the four slots, not yet run
        await _restart_keeps_every_slot(engine, state)
        assert handled == []  # the dispatch task never ran: the case under test


async def test_a_cron_tick_cancelled_at_stop_before_it_ran_gives_its_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def next_tick(clock: Any, moment: Any) -> float:  # the schedules' clock, driven by the test: on time
        await ticks.get()
        return 0.0

    monkeypatch.setattr(cron_module._WallClock, "sleep_until", next_tick)
    async with _engine("modules::cron::CronModule", max_fired_calls=1) as engine:
        cron = _module(engine, CronModule)
        await cron.register(TriggerInfo(id="every", trigger_type="cron", function_id="on::tick",
                                        config={"expression": "* * * * * *"}))
        locked: list[str] = []
        assert cron._lock is not None

        async def try_fire(job_id: str, tick_ms: int) -> bool:
            locked.append(job_id)
            return True

        monkeypatch.setattr(cron._lock, "try_fire", try_fire)
        ticks.put_nowait(None)
        # One turn: the schedule wakes first and makes the tick's task; this test resumes right after, before
        # that task's first step.
        await asyncio.sleep(0)
        assert engine.fired_calls.stats()["in_flight"] == 1
        await _restart_keeps_every_slot(engine, cron)
        assert locked == []  # the tick's task never ran: the case under test
