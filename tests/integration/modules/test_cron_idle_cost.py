"""Cron schedules that are not due cost nothing per schedule while they wait: one shared clock reads the wall clock
at most once a second, whatever the number of schedules.

Before, each schedule slept in 1 s pieces of its own and read the wall clock after each (to see it stepped forward):
N schedules due far ahead at distinct instants meant N reads a second (20,000 due in 2099: 37 % of a core, idle).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, tzinfo
from typing import Any, ClassVar

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("counts the cron module's reads of the wall clock")]

N = 1000
WINDOW_S = 2.0  # a measuring window, not a wait for an event: the reads made during it are counted


class CountedClock(datetime):
    """The cron module's wall clock, counting its reads."""

    reads: ClassVar[int] = 0

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> CountedClock:
        cls.reads += 1
        return cls.fromtimestamp(datetime.now(tz).timestamp(), tz)


def far_expression(n: int) -> str:
    """A schedule due once, in 2099, at an instant of its own (no two schedules share a timer)."""
    return f"{n % 60} {n // 60 % 60} {n // 3600 % 24} 1 1 * 2099"


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    monkeypatch.setattr(cron_module, "datetime", CountedClock)
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")])
    async with Engine(config=config) as engine:
        yield engine


async def none(data: Any) -> None:
    return None


async def test_schedules_far_ahead_cost_a_few_clock_reads_a_second_whatever_their_number(engine: Engine) -> None:
    cron = engine.module("cron")
    assert isinstance(cron, CronModule)
    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::never", none)
        for n in range(N):
            await worker.send({"type": "registertrigger", "id": f"far{n}", "trigger_type": "cron",
                               "function_id": "app::never", "config": {"expression": far_expression(n)}})
        await worker.sync()
        await until(lambda: len(cron._instants) == N, within=10)  # every schedule asleep, each on its own instant
        before = CountedClock.reads
        await asyncio.sleep(WINDOW_S)  # the loop runs untouched: what it does meanwhile is counted
        reads = CountedClock.reads - before
        # before: N reads a second (~2,000 in the window); now one per wake of the shared clock, ~1 a second
        assert reads <= 3 * WINDOW_S + 2, reads
        assert cron.missed_ticks == 0


async def test_schedules_registered_and_unregistered_leave_no_sleeper_behind(engine: Engine) -> None:
    cron = engine.module("cron")
    assert isinstance(cron, CronModule)
    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::never", none)
        for round_ in range(4):
            for n in range(N):
                await worker.send({"type": "registertrigger", "id": f"far{n}", "trigger_type": "cron",
                                   "function_id": "app::never", "config": {"expression": far_expression(n)}})
            await worker.sync()
            await until(lambda: len(cron._instants) == N, within=10)
            for n in range(N):
                await worker.send({"type": "unregistertrigger", "id": f"far{n}", "trigger_type": "cron"})
            await worker.sync()
            await until(lambda: not cron._schedules and not cron._instants, within=10)
            # cancelled sleepers are dropped in bulk once they are half the heap: none live, a few left at most
            assert len(cron._clock._heap) <= cron_module._COMPACT_MIN + 1, (round_, len(cron._clock._heap))

