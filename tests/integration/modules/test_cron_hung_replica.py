"""Two engines share a Redis cron lock and one ``lock_key``: once this engine's tick of the trigger is still
unanswered a full period later (its handler hung), it leaves the following ticks to the others, and says so.

Before, the lock was taken before anything looked at the previous tick, and the replica whose handler never answered
kept winning about half the shared ticks for ever (17 of 36, the other replica's worker answering at once), with no
warning.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from module_worker import ModuleWorker
from test_cron_engine import engine_with

from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from tests.polling import until
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.redis,
              pytest.mark.our_engine("configures the cron module's Redis lock")]


@pytest.fixture
async def settings() -> AsyncIterator[dict[str, Any]]:
    prefix = f"test-cron-hung-{uuid.uuid4().hex[:8]}:"
    yield {"adapter": {"class": "modules::cron::RedisCronAdapter",
                       "config": {"redis_url": require_redis(), "key_prefix": prefix}}}
    admin = aioredis.Redis.from_url(require_redis())
    keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


async def test_a_replica_whose_handler_hung_leaves_the_shared_ticks_to_the_others(
        settings: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    hung_got: list[float] = []
    fine_got: list[float] = []
    release = asyncio.Event()

    async def hung(data: Any) -> None:
        hung_got.append(datetime.fromisoformat(data["scheduled_time"]).timestamp())
        await release.wait()  # never answers while the test runs

    async def fine(data: Any) -> None:
        fine_got.append(datetime.fromisoformat(data["scheduled_time"]).timestamp())

    config = {"expression": "* * * * * *", "lock_key": "nightly"}
    with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
        async with engine_with(settings) as one, engine_with(settings) as two, \
                ModuleWorker(one.url) as a, ModuleWorker(two.url) as b:
            try:
                await a.function("job::run", hung)
                await b.function("job::run", fine)
                await a.trigger("nightly@a", "cron", "job::run", config)
                await until(lambda: bool(hung_got))  # the hung replica took a tick: its handler never answers
                await b.trigger("nightly@b", "cron", "job::run", config)
                first = hung_got[0]
                await until(lambda: len([t for t in fine_got if t > first + 1]) >= 4, within=15)
            finally:
                release.set()
            cron = one.module("cron")
            assert isinstance(cron, CronModule)
            # before: the hung replica kept taking ticks (its engine's timer came first: all of them here)
            assert [t for t in hung_got if t > first + 1] == []
            assert cron.ticks_left_unanswered >= 4
    warnings = [r.getMessage() for r in caplog.records if "still unanswered a full period later" in r.getMessage()]
    assert warnings and "cron nightly@a tick " in warnings[0] and "function job::run still unanswered" in warnings[0]
