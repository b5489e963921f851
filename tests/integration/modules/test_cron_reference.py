"""The reference SDK (its own interpreter, in a subprocess) registering a ``cron`` trigger on a seconds schedule
with our engine: its function fires, once per second, with the production payload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.fixtures.refworker import ref_worker

pytestmark = [pytest.mark.interop]

CRON = r'''
async def tick(data):
    emit("tick", data=data)

iii.register_function("ref.cron.tick", tick)
iii.register_trigger({"type": "cron", "function_id": "ref.cron.tick", "config": {"expression": "* * * * * *"}})
triggers = iii.list_triggers()
emit("triggers", ids=[t.id for t in triggers if t.function_id == "ref.cron.tick"])
serve()
'''


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    spec = ModuleSpec("modules::cron::CronModule")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as running:
        yield running


async def test_seconds_schedule_fires_the_reference_function(engine_url: str, tmp_path: Path) -> None:
    async with ref_worker(tmp_path, engine_url, CRON) as worker:
        ids = (await worker.event("triggers"))["ids"]
        assert len(ids) == 1, ids
        trigger_id = ids[0]
        ticks = [t["data"] for t in await worker.events("tick", 2, wait_s=10)]
        for payload in ticks:
            assert set(payload) == {"trigger", "job_id", "scheduled_time", "actual_time"}
            assert payload["trigger"] == "cron" and payload["job_id"] == trigger_id
        scheduled = [datetime.fromisoformat(p["scheduled_time"]) for p in ticks]
        assert all(s.utcoffset() == timedelta(0) for s in scheduled)  # UTC
        assert (scheduled[1] - scheduled[0]).total_seconds() == 1.0  # consecutive seconds, no tick skipped
        assert all(s.microsecond == 0 for s in scheduled)
