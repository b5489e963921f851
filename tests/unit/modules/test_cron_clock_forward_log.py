"""A wall clock set forward skips the ticks it passed over as a stall of the engine's loop does, but the warning
names the cause: before, a clock set forward an hour was logged as "the engine was 3600.0 s late", which sends an
operator looking for a stall that never happened (the stall's own wording: test_cron.py)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from fake_services import FakeServices, ShiftedClock

from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module

pytestmark = pytest.mark.timeout(20)


async def test_a_clock_set_forward_is_logged_as_such_not_as_a_late_engine(
        services: FakeServices, cron: CronModule, wall_clock: type[ShiftedClock],
        caplog: pytest.LogCaptureFixture) -> None:
    fired = services.queue_calls("tick")
    with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
        await services.trigger("cron", "stepped", "tick", {"expression": "* * * * * *"})
        await fired.get()
        wall_clock.offset = timedelta(hours=1)
        for _ in range(2):
            await fired.get()
    warnings = [r.getMessage() for r in caplog.records if r.name == cron_module.__name__]
    assert warnings, "no tick was skipped"
    assert warnings[0].startswith("cron stepped: the wall clock went forward (the engine did not stall): 3"), warnings
    assert "engine stalled" not in warnings[0] and cron.missed_ticks >= 3598
