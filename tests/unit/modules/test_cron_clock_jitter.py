"""Cron under a wall clock that wanders a little (NTP slewing and stepping by up to ±0.5 s) and a trigger replaced
while one of its ticks is in flight: every tick once, none skipped, no "went back" warning; the replaced
schedule's tick dropped and the new one's fired."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime, timedelta

import pytest
from fake_services import FakeServices, ShiftedClock, SlowCondition

from iii_engine.limits import FiredHold
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module


async def test_a_clock_stepping_within_half_a_second_skips_no_tick(
        services: FakeServices, cron: CronModule, wall_clock: type[ShiftedClock],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    wall_clock.offset = timedelta(seconds=-0.5)
    fired = services.queue_calls("tick")
    take = services.fired_calls.try_take
    woken = 0

    def step_on_waking(n: int = 1) -> FiredHold | None:
        # The schedule takes its slot right after waking for a tick: the clock steps from -0.5 s to +0.5 s (or
        # back) just then, as a jittery NTP source makes it do at any moment
        nonlocal woken
        woken += 1
        wall_clock.offset = timedelta(seconds=0.5 if woken % 2 else -0.5)
        return take(n)

    monkeypatch.setattr(services.fired_calls, "try_take", step_on_waking)
    with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
        await services.trigger("cron", "jittery", "tick", {"expression": "* * * * * *"})
        ticks = [datetime.fromisoformat((await asyncio.wait_for(fired.get(), 4))["scheduled_time"])
                 for _ in range(4)]
    # before: each step forward right after a tick made the following one 1 ms late, and it was skipped
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)] == [1, 1, 1], ticks
    assert cron.missed_ticks == 0
    assert [r.getMessage() for r in caplog.records if r.name == cron_module.__name__] == []


async def test_a_trigger_replaced_while_its_tick_awaits_the_condition_fires_the_new_schedule_only(
        services: FakeServices, cron: CronModule, slow_condition: SlowCondition) -> None:
    old = services.collect("old")
    new = services.queue_calls("new")
    await services.trigger("cron", "job", "old", {"expression": "* * * * * *", "condition_function_id": "slow"})
    await asyncio.wait_for(slow_condition.asked.wait(), 3)
    await services.trigger("cron", "job", "new", {"expression": "* * * * * *"})
    slow_condition.answer.set()
    first = await asyncio.wait_for(new.get(), 3)
    second = await asyncio.wait_for(new.get(), 3)
    assert (datetime.fromisoformat(second["scheduled_time"])
            - datetime.fromisoformat(first["scheduled_time"])) == timedelta(seconds=1)
    assert old == [], "the replaced schedule's tick fired after the register that replaced it returned"
    assert datetime.fromisoformat(first["scheduled_time"]) > datetime.now(UTC) - timedelta(seconds=3)
