"""The schedules due at one instant share one timer: the first sleeps, the others wait for it. When the sleeper is
cancelled (its trigger unregistered) it hands the sleep to a follower; a follower cancelled after that hand-off but
before it ran passes the sleep on in turn (re-attack: the hand-off was lost, and the instant's other schedules never
fired again, with nothing counted or logged)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("drives the cron module's schedules directly")]


async def test_a_follower_cancelled_after_the_hand_off_passes_the_sleep_on() -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")]))
    async with engine, ModuleWorker(engine.url) as worker:
        fired: collections.Counter[str] = collections.Counter()

        async def on(data: Any) -> None:
            fired[data["job_id"]] += 1

        await worker.function("app::on", on)
        for trigger_id in "ABCD":
            await worker.trigger(trigger_id, "cron", "app::on", {"expression": "* * * * * *"})
        cron: Any = engine.module("cron")
        await until(lambda: any(len(instant.followers) == 3 for instant in cron._instants.values()), within=5)
        first, second = cron._schedules.pop("A"), cron._schedules.pop("B")  # what two unregisters do
        first.cancel()  # the sleeper: it hands the sleep to B in its next step ...
        asyncio.get_running_loop().call_soon(second.cancel)  # ... and B is cancelled in that turn, before it ran
        fired.clear()
        await until(lambda: fired["C"] >= 2 and fired["D"] >= 2, within=6)
        assert fired["A"] == fired["B"] == 0
