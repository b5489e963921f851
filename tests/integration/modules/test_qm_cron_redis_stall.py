"""Cron on a Redis lock store that stops answering: each tick gives up within the lock's timeout, gives its
``max_fired_calls`` slot back, and is counted and logged rate-limited; once Redis answers again ticks fire.

Before: the lock had no socket timeout, so every tick waited for Redis for good, each holding a slot of the
engine's bound on trigger-fired calls (one every-second trigger took them all, within ``max_fired_calls``
seconds), and nothing was logged; a Redis that refused logged a traceback per tick instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from test_cron_engine import engine_with
from test_engine_attack_pubsub import RedisProxy

from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import locks as cron_locks
from iii_engine.modules.cron import module as cron_module
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("configures the cron Redis adapter through a proxy")]


def lock_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == cron_module.__name__ and "lock store failed" in r.getMessage()]


async def test_ticks_on_a_stalled_redis_lock_give_their_slots_back_and_are_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cron_locks, "_REDIS_TIMEOUT_S", 0.3, raising=False)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def tick(data: Any) -> None:
        await got.put(data)

    async with RedisProxy() as proxy:
        settings = {"adapter": {"class": "modules::cron::RedisCronAdapter",
                                "config": {"redis_url": proxy.url, "key_prefix": f"qm-{uuid.uuid4()}:"}}}
        with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
            async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
                module = engine.module("cron")
                assert isinstance(module, CronModule)
                proxy.hold()  # after the start, which checks Redis answers: it stalls, takes commands, never answers
                await worker.function("qm::tick", tick)
                await worker.trigger("qm-stalled", "cron", "qm::tick", {"expression": "* * * * * *"})
                await until(lambda: bool(lock_warnings(caplog)), within=5)  # the first tick timed out
                await until(lambda: module.lock_failures >= 3, within=10)
                assert engine.fired_calls.peak <= 1  # each tick gave its slot back before the next one
                assert got.empty()
                assert len(lock_warnings(caplog)) == 1  # the first at once, the rest at the interval's end
                assert "qm-stalled" in lock_warnings(caplog)[0]
                proxy.release()
                payload = await asyncio.wait_for(got.get(), 5)  # Redis answers again: ticks fire
                assert payload["job_id"] == "qm-stalled"
        assert len(lock_warnings(caplog)) == 2  # stopping the engine logs the rest of the burst
        assert f"({module.lock_failures} in all)" in lock_warnings(caplog)[1]
