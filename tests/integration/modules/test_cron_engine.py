"""Cron inside real engines: a seconds schedule fires a worker function; two engines sharing Redis fire once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.our_engine("configures the cron module's adapters")

CRON = "modules::cron::CronModule"


def engine_with(settings: dict[str, Any]) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(CRON, settings)]))


async def test_seconds_schedule_fires_the_worker_function() -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def tick(data: Any) -> None:
        await got.put(data)

    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("jobs::tick", tick)
        await worker.trigger("bad", "cron", "jobs::tick", {"expression": "not a cron"})
        await worker.trigger("every-second", "cron", "jobs::tick", {"expression": "* * * * * *"})
        listed = await worker.result("engine::triggers::list", {})
        assert [t["id"] for t in listed["triggers"]] == ["every-second"]  # the bad expression was rejected
        payload = await asyncio.wait_for(got.get(), 5)
        assert payload["trigger"] == "cron" and payload["job_id"] == "every-second"
        assert set(payload) == {"trigger", "job_id", "scheduled_time", "actual_time"}
        assert payload["scheduled_time"].endswith("+00:00")


@pytest.mark.redis
async def test_two_engines_sharing_redis_fire_each_tick_once() -> None:
    settings = {
        "adapter": {
            "class": "modules::cron::RedisCronAdapter",
            "config": {"redis_url": "redis://127.0.0.1:6379/0", "key_prefix": f"test-{uuid.uuid4()}:"},
        }
    }
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def handler(engine_name: str) -> Any:
        async def tick(data: Any) -> None:
            await got.put((engine_name, data["scheduled_time"]))

        return tick

    async with engine_with(settings) as one, engine_with(settings) as two:
        async with ModuleWorker(one.url) as w1, ModuleWorker(two.url) as w2:
            for name, worker in (("one", w1), ("two", w2)):
                await worker.function("shared::tick", handler(name))
                await worker.trigger("shared-cron", "cron", "shared::tick", {"expression": "* * * * * *"})
            firings: list[tuple[str, str]] = []
            # Collect until three distinct ticks were seen; every earlier tick is then complete on both engines.
            while len({t for _, t in firings}) < 4:
                firings.append(await asyncio.wait_for(got.get(), 5))
            ticks = sorted({t for _, t in firings})[:3]
            for tick in ticks:
                assert [t for _, t in firings].count(tick) == 1, firings
            seconds = [datetime.fromisoformat(t).timestamp() for t in ticks]
            assert seconds == [seconds[0], seconds[0] + 1, seconds[0] + 2]
