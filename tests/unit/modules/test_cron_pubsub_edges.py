"""Edges of the cron and pubsub modules: error texts of hostile expressions, a late engine and an expired lock key,
and deliveries still in flight when their trigger is unregistered."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fake_services import FakeServices, ShiftedClock, SlowCondition, started

from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron.expr import CronExpression, CronSyntaxError
from iii_engine.modules.cron.locks import RedisCronLock
from iii_engine.modules.pubsub import PubSubModule
from tests.polling import until

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_an_out_of_range_number_is_quoted_short() -> None:
    # before: the number was printed whole, so a 4,000-digit one made a 4,000-character error and log line
    with pytest.raises(CronSyntaxError) as refused:
        CronExpression.parse("7" * 4000 + " * * * * *")
    assert len(str(refused.value)) < 200, len(str(refused.value))
    assert str(refused.value).startswith("seconds: 777")
    assert "is outside 0-59" in str(refused.value)


@pytest.mark.redis
async def test_a_short_lock_ttl_still_fires_each_tick_on_one_engine_only() -> None:
    prefix = f"test-{uuid.uuid4()}:"
    a = RedisCronLock(REDIS_URL, ttl_ms=1, key_prefix=prefix)
    b = RedisCronLock(REDIS_URL, ttl_ms=1, key_prefix=prefix)
    tick_ms = int(time.time()) * 1000
    try:
        assert await a.try_fire("job", tick_ms)
        fired_at = time.monotonic()
        # engine b tries the same tick a moment later, as engines sharing a Redis do
        await until(lambda: time.monotonic() > fired_at + 0.02)
        # before: a's key had expired after 1 ms, so b fired the tick too (every tick on every engine)
        assert not await b.try_fire("job", tick_ms)
        assert await b.try_fire("job", tick_ms + 1000)
    finally:
        await a.close()
        await b.close()


async def test_a_cron_tick_in_flight_when_its_trigger_is_unregistered_is_not_fired(
        services: FakeServices, cron: CronModule, slow_condition: SlowCondition) -> None:
    fired = services.collect("tick")
    trigger = await services.trigger("cron", "gone", "tick",
                                     {"expression": "* * * * * *", "condition_function_id": "slow"})
    await asyncio.wait_for(slow_condition.asked.wait(), 3)
    await cron.unregister(trigger)
    slow_condition.answer.set()
    await until(lambda: services.fired_calls.in_flight == 0, within=5)
    assert fired == [], "a tick fired after its trigger's unregister returned"


async def test_a_delivery_in_flight_when_its_subscriber_is_unregistered_is_not_made(
        services: FakeServices, pubsub: PubSubModule, slow_condition: SlowCondition) -> None:
    delivered = services.collect("sub")
    trigger = await services.trigger("subscribe", "leaving", "sub", {"topic": "t", "condition_function_id": "slow"})
    await services.call("publish", {"topic": "t", "data": 1})
    await asyncio.wait_for(slow_condition.asked.wait(), 3)
    await pubsub.unregister(trigger)
    slow_condition.answer.set()
    await until(lambda: services.fired_calls.in_flight == 0, within=5)
    assert delivered == [], "a message reached a subscriber after its unregister returned"


async def test_a_wall_clock_set_back_does_not_silence_a_schedule(
        services: FakeServices, wall_clock: type[ShiftedClock]) -> None:
    fired = services.queue_calls("tick")
    # a lock that forgets at once: what is measured is the schedule's silence, not the lock's memory
    forgetting = {"adapter": {"class": "modules::cron::KvCronAdapter", "config": {"lock_ttl_ms": 1}}}
    async with started(CronModule(services, forgetting)):
        await services.trigger("cron", "every-second", "tick", {"expression": "* * * * * *"})
        await asyncio.wait_for(fired.get(), 3)
        # an NTP step or an operator sets the clock back an hour
        wall_clock.offset = timedelta(hours=-1)
        # a tick scheduled by the old clock, already asleep, may still come: skip it, then expect ticks by the new one
        late = await asyncio.wait_for(fired.get(), 5)
        if datetime.fromisoformat(late["scheduled_time"]) > wall_clock.now(UTC) + timedelta(minutes=1):
            late = await asyncio.wait_for(fired.get(), 5)
        assert abs(datetime.fromisoformat(late["scheduled_time"]) - wall_clock.now(UTC)) < timedelta(seconds=5)
