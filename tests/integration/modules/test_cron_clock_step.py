"""A wall clock stepped forward while a cron schedule sleeps: the tick it made late is skipped, counted and logged.

Before, the schedule slept the whole delay to its next tick in one monotonic sleep and never saw the step: with
``0,30 * * * * *`` and the clock stepped +15 s, the :30 tick fired at :45, with no warning and no ``missed_ticks``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, ClassVar

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

STEP = timedelta(seconds=10)


class SteppedClock(datetime):
    """The cron module's wall clock: the real one plus :attr:`offset` (an NTP step, an operator's ``date -s``)."""

    offset: ClassVar[timedelta] = timedelta(0)

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> SteppedClock:
        return cls.fromtimestamp((datetime.now(tz) + cls.offset).timestamp(), tz)


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    monkeypatch.setattr(cron_module, "datetime", SteppedClock)
    monkeypatch.setattr(SteppedClock, "offset", timedelta(0))
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")])
    async with Engine(config=config) as engine:
        yield engine


async def test_a_tick_the_clock_stepped_past_during_the_sleep_is_skipped_counted_and_logged(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    cron = engine.module("cron")
    assert isinstance(cron, CronModule)
    fired: list[Any] = []

    async def tick(data: Any) -> None:
        fired.append(data)

    # once a minute, its tick 4-5 s away: the schedule sleeps when the clock steps
    due = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
        async with ModuleWorker(engine.url) as worker:
            await worker.function("app::tick", tick)
            await worker.trigger("sparse", "cron", "app::tick", {"expression": f"{due.second} * * * * *"})
            SteppedClock.offset = STEP
            # before: the sleep ran out at the tick's real time, and the tick fired 10 s late by the wall clock
            await until(lambda: cron.missed_ticks == 1 or bool(fired), within=8)
            assert fired == [] and cron.missed_ticks == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == cron_module.__name__]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("cron sparse: the wall clock went forward (the engine did not stall): "), warnings
    assert f"late for tick {cron_module.rfc3339(due)}; 1 tick(s) up to " in warnings[0], warnings
