"""The Redis cron lock takes the locks of the ticks due together in few round trips, and a tick waiting for the lock
holds no ``max_fired_calls`` slot.

Before, each trigger's tick was one EVALSHA through a 50-connection pool: with 2,000 every-second triggers (each
its own ``lock_key``) 49 % of the ticks never fired on one engine and 93 % on two ("PoolExhaustedError ... all 50
connections stayed busy for 5 s"), and the ticks waiting for a connection held their slots of ``max_fired_calls``,
so other trigger types' fired calls were skipped meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from module_worker import ModuleWorker
from test_cron_engine import engine_with

from iii_engine import Engine
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron.locks import RedisCronLock
from tests.polling import until
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.redis,
              pytest.mark.our_engine("configures the cron module's Redis lock")]

N = 1000


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    prefix = f"test-cron-batches-{uuid.uuid4().hex[:8]}:"
    settings = {"adapter": {"class": "modules::cron::RedisCronAdapter",
                            "config": {"redis_url": require_redis(), "key_prefix": prefix}}}
    try:
        async with engine_with(settings) as engine:
            yield engine
    finally:
        admin = aioredis.Redis.from_url(require_redis())
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


def redis_lock(engine: Engine) -> RedisCronLock:
    cron = engine.module("cron")
    assert isinstance(cron, CronModule) and isinstance(cron._lock, RedisCronLock)
    return cron._lock


async def register(worker: ModuleWorker, n: int) -> None:
    for i in range(n):
        await worker.send({"type": "registertrigger", "id": f"t{i}", "trigger_type": "cron", "function_id": "app::tick",
                           "config": {"expression": "* * * * * *", "lock_key": f"k{i}"}})
    await worker.sync()


async def test_the_ticks_of_many_triggers_are_locked_in_few_round_trips_and_each_fires_once(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = redis_lock(engine)
    script = lock._script
    round_trips: list[int] = []  # keys per round trip

    async def counted(keys: list[str], args: list[Any]) -> Any:
        round_trips.append(len(keys))
        return await script(keys=keys, args=args)

    monkeypatch.setattr(lock, "_script", counted)
    fired: Counter[tuple[str, str]] = Counter()

    async def tick(data: Any) -> None:
        fired[data["job_id"], data["scheduled_time"]] += 1

    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::tick", tick)
        await register(worker, N)
        after = datetime.now().timestamp() + 1

        def complete_ticks() -> list[str]:
            per_tick = Counter(t for _, t in fired if datetime.fromisoformat(t).timestamp() > after)
            return sorted(t for t, n in per_tick.items() if n >= N)

        await until(lambda: len(complete_ticks()) >= 2, within=20)
    ticks = complete_ticks()[:2]
    assert all(fired[f"t{i}", t] == 1 for i in range(N) for t in ticks)
    cron = engine.module("cron")
    assert isinstance(cron, CronModule) and cron.lock_failures == 0
    # before: one round trip per trigger per tick (len(round_trips) == sum(round_trips))
    assert len(round_trips) * 20 <= sum(round_trips), Counter(round_trips).most_common(5)
    assert max(round_trips) <= 1000


async def test_a_tick_waiting_for_the_redis_lock_holds_no_fired_call_slot(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = redis_lock(engine)
    script = lock._script
    gate = asyncio.Event()
    waiting: list[str] = []

    async def held_back(keys: list[str], args: list[Any]) -> Any:  # Redis slow to answer
        waiting.extend(keys)
        await gate.wait()
        return await script(keys=keys, args=args)

    fired: Counter[str] = Counter()

    async def tick(data: Any) -> None:
        fired[data["job_id"]] += 1

    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::tick", tick)
        monkeypatch.setattr(lock, "_script", held_back)
        await register(worker, 50)
        await until(lambda: len(set(waiting)) == 50)
        # before: 50, the bound other trigger types' fired calls need
        assert engine.fired_calls.stats()["in_flight"] == 0
        gate.set()
        await until(lambda: len(fired) == 50)


async def test_a_tick_whose_asker_left_before_its_batch_went_is_not_taken() -> None:
    """A trigger unregistered while its lock request waited for its batch: the tick stays free for another engine
    sharing the lock (before, the batch took it anyway, and the other engine lost it: 100 of 100)."""
    prefix = f"test-cron-batches-{uuid.uuid4().hex[:8]}:"
    mine = RedisCronLock(require_redis(), ttl_ms=60_000, key_prefix=prefix)
    other = RedisCronLock(require_redis(), ttl_ms=60_000, key_prefix=prefix)
    try:
        asking = asyncio.create_task(mine.try_fire("job", 1_000, lock_key="shared"))
        await asyncio.sleep(0)  # (one turn: it has asked, and its batch is due at the next turn)
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        assert await other.try_fire("job", 1_000, lock_key="shared") is True
    finally:
        await mine.close()
        await other.close()
        admin = aioredis.Redis.from_url(require_redis())
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
