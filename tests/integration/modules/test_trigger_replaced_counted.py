"""Replacements of another worker's trigger past the warning's burst are counted in its summary (attack F2: 200
rapid re-registrations of one trigger id by two workers logged the first 10, then summaries said nothing of the
rest, ``_TRIGGER_NOTES`` having no ``replaced`` entry). A real engine and two workers."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine import engine as engine_module

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("the engine's own warnings")]

REGISTRATIONS = 30


async def test_replacements_past_the_burst_are_counted_in_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(data: Any) -> None:
        return None

    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")])
    with caplog.at_level(logging.WARNING, logger=engine_module.__name__):
        async with Engine(config=config) as engine:
            async with ModuleWorker(engine.url) as a, ModuleWorker(engine.url) as b:
                await a.function("app::a", handler)
                await b.function("app::b", handler)
                for n in range(REGISTRATIONS):  # each after the first replaces the other worker's
                    worker, function_id = (a, "app::a") if n % 2 == 0 else (b, "app::b")
                    await worker.trigger("same", "cron", function_id, {"expression": "0 0 3 * * *"})
    # the engine's stop writes the count the interval had not written yet
    lines = [r.getMessage() for r in caplog.records if "replaced" in r.getMessage()]
    one_each = [line for line in lines if line.startswith("worker ")]
    summaries = [line for line in lines if line.startswith("triggers: ")]
    assert len(one_each) == engine_module.UNDECODABLE_LOG_BURST, lines
    counted = REGISTRATIONS - 1 - len(one_each)
    # the first loss is written at once, the rest at the interval's end or the engine's stop
    assert sum(int(n) for line in summaries for n in re.findall(r", (\d+) replaced another worker's", line)) \
        == counted, lines
