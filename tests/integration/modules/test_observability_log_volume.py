"""The observability module's own log lines stay few whatever a worker calls: alert lines are rate-limited, and
``engine::log::*`` echoes to the console only with ``logs_console_output``."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.observability.module import ALERT_LOG_BURST
from tests.integration.modules.test_observability import engine_with

pytestmark = pytest.mark.our_engine("configures the observability module")

_LOGGER = "iii_engine.modules.observability.module"


async def test_an_alert_storm_is_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    # Before: one "Alert triggered" line per event: 60 evaluations, 60 lines (the attack: 274,402 lines in 20 s).
    rules = [{"name": "ao-loud", "metric": "iii.invocations.total", "threshold": 0, "operator": ">=",
              "cooldown_seconds": 0}]
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    events = 0
    async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
        for _ in range(60):
            events += len((await worker.result("engine::alerts::evaluate", {}))["triggered_alerts"])
        module: Any = engine.module("observability")
        module.alerts = None  # the alert task's own evaluations would change the count
    messages = [r.getMessage() for r in caplog.records if r.name == _LOGGER]
    own = [m for m in messages if m.startswith("Alert triggered")]
    counted = sum(int(n) for m in messages for n in re.findall(r"^alerts: (\d+) triggered", m))
    assert len(own) == ALERT_LOG_BURST, len(own)
    assert len(own) + counted >= events == 60  # every event is in a line or a count (stop logs the last counts)
    assert len(messages) <= ALERT_LOG_BURST + 3


async def test_engine_log_is_not_echoed_when_console_output_is_off(caplog: pytest.LogCaptureFixture) -> None:
    # Before: every engine::log::* call wrote a console line even with logs_console_output: false.
    caplog.set_level(logging.DEBUG, logger=_LOGGER)
    async with engine_with({"logs_console_output": False}) as engine, ModuleWorker(engine.url) as worker:
        for _ in range(5):
            await worker.result("engine::log::info", {"message": "ao quiet please"})
        assert len((await worker.result("engine::logs::list", {}))["logs"]) == 5  # still stored
    assert not [r for r in caplog.records if "ao quiet please" in r.getMessage()]
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await worker.result("engine::log::info", {"message": "ao loud"})
    assert [r.getMessage() for r in caplog.records if "ao loud" in r.getMessage()] == ["ao loud"]
