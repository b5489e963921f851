"""A stall that makes every cron schedule skip ticks is logged in a line or two with the counts, not a line per
trigger: before, 5,000 every-second triggers and one 3 s stop of the engine wrote 5,903 warnings (1.2 MB), on the
event loop, which made the stall longer."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

N = 300


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")])
    async with Engine(config=config) as engine:
        yield engine


async def test_a_stall_past_every_schedule_is_logged_once_with_the_counts(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    cron = engine.module("cron")
    assert isinstance(cron, CronModule)
    fired: dict[str, float] = {}  # trigger -> its latest tick fired

    async def tick(data: Any) -> None:
        fired[data["job_id"]] = datetime.fromisoformat(data["scheduled_time"]).timestamp()

    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::tick", tick)
        for i in range(N):
            await worker.send({"type": "registertrigger", "id": f"t{i}", "trigger_type": "cron",
                               "function_id": "app::tick", "config": {"expression": "* * * * * *"}})
        await worker.sync()
        await until(lambda: len(fired) == N)  # every schedule is running
        with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
            # the stall under test: the event loop blocked past a tick of every schedule at least
            time.sleep(2.5)  # noqa: ASYNC251
            resumed = time.time()
            # a schedule fires its next tick after it skipped those the stall passed over
            await until(lambda: all(t > resumed for t in fired.values()))
            lines = [r.getMessage() for r in caplog.records if r.name == cron_module.__name__]
            # before: one line per trigger (300)
            assert len(lines) == 1, (len(lines), lines[:2])
            cron._missed_log.flush(None)  # the end-of-interval line, without waiting out the interval
    first, summary = [r.getMessage() for r in caplog.records if r.name == cron_module.__name__]
    assert re.match(r"cron t\d+: the engine stalled: \d+\.\d s late for tick \S+; \d+ tick\(s\) up to \S+ skipped "
                    r"\[\d+ tick\(s\) of 1 trigger schedule\(s\) skipped since the last warning ", first), first
    counted = re.match(r"cron: (\d+) tick\(s\) of (\d+) trigger schedule\(s\) skipped since the last warning "
                       r"\(\d+ because the engine stalled; (\d+) in all\)$", summary)
    assert counted is not None, summary
    assert int(counted[2]) == N - 1 and int(counted[3]) == cron.missed_ticks >= N
