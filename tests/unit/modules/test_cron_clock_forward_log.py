"""A wall clock set forward and a real stall of the engine's loop skip the ticks they passed over alike, but the
warning names the cause: before, a clock set forward an hour was logged as "the engine was 3600.0 s late", which
sends an operator looking for a stall that never happened."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from fake_services import FakeServices

from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module

pytestmark = pytest.mark.timeout(20)


class _SteppedClock(datetime):
    """``datetime`` whose ``now`` is the real one plus ``ahead``."""

    ahead: ClassVar[timedelta] = timedelta()

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) + cls.ahead


async def _first_warning(module: CronModule, services: FakeServices, on_first_tick: Any,
                         caplog: pytest.LogCaptureFixture) -> str:
    fired: asyncio.Queue[Any] = asyncio.Queue()
    calls = 0

    async def handler(data: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            on_first_tick()
        await fired.put(data)

    services.add("tick", handler)
    with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
        await services.trigger("cron", "stepped", "tick", {"expression": "* * * * * *"})
        for _ in range(3):
            await asyncio.wait_for(fired.get(), 6)
    warnings = [r.getMessage() for r in caplog.records if r.name == cron_module.__name__]
    assert warnings, "no tick was skipped"
    return warnings[0]


async def test_a_clock_set_forward_is_logged_as_such_not_as_a_late_engine(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cron_module, "datetime", _SteppedClock)
    monkeypatch.setattr(_SteppedClock, "ahead", timedelta())
    services = FakeServices()
    module = CronModule(services, {})
    await module.start()
    try:
        warning = await _first_warning(module, services,
                                       lambda: setattr(_SteppedClock, "ahead", timedelta(hours=1)), caplog)
    finally:
        await module.stop()
    assert "the wall clock went forward (the engine did not stall)" in warning, warning
    assert "engine stalled" not in warning and "3600" in warning and module.missed_ticks >= 3598


async def test_a_stalled_loop_is_logged_as_a_stall(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    services = FakeServices()
    module = CronModule(services, {})
    await module.start()
    try:
        # The stall itself is what is tested: the loop is blocked for 2.2 s, past two ticks.
        warning = await _first_warning(module, services, lambda: time.sleep(2.2), caplog)
    finally:
        await module.stop()
    assert "cron stepped: the engine stalled: " in warning, warning
    assert "wall clock" not in warning and module.missed_ticks >= 1
