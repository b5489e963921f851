"""The pubsub Redis bus: a subscribe (a trigger's register) cancelled while Redis has not confirmed its SUBSCRIBE
withdraws its topic, unless another subscribe of it still waits."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from test_engine_attack_pubsub import RedisProxy, engine_on
from test_pubsub_redis_subscribe_race import waits_for_confirmation

from iii.iii_types import TriggerInfo
from iii_engine.modules.pubsub import bus as bus_module
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("drives the pubsub Redis bus through a proxy")]

REDIS_URL = "redis://127.0.0.1:6379/0"


async def nothing(topic: str, data: Any) -> None:
    """A deliver that drops what it gets (these tests look at subscriptions, not messages)."""


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_subscribe_cancelled_before_its_confirmation_withdraws_its_topic() -> None:
    # Before: the cancelled subscribe left its topic wanted: Redis confirmed the SUBSCRIBE once the proxy let it
    # through, and the topic stayed subscribed (PUBSUB NUMSUB 1) and in redis-py's channels, renewed at every
    # reconnection, with nothing in the engine wanting it.
    topic = f"cancel-{uuid.uuid4()}"
    redis = Redis.from_url(REDIS_URL)
    async with RedisProxy() as proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(nothing)
        try:
            proxy.hold()  # the SUBSCRIBE waits in the proxy: no confirmation yet
            subscribe = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(subscribe))
            await cancelled(subscribe)
            proxy.release()
            # a later SUBSCRIBE's confirmation: every command sent before it has been done by Redis
            await bus.subscribe(f"{topic}-after")
            assert (await redis.pubsub_numsub(topic))[0][1] == 0, "subscribed in Redis with nothing wanting it"
            assert topic.encode() not in bus._pubsub.channels  # nor renewed at a reconnection
            assert topic not in bus._confirm
        finally:
            await bus.close()
            await redis.aclose()


async def test_a_cancelled_subscribe_leaves_the_topic_to_one_still_waiting() -> None:
    topic = f"cancel-{uuid.uuid4()}"
    redis = Redis.from_url(REDIS_URL)
    async with RedisProxy() as proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(nothing)
        try:
            proxy.hold()
            first = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(first))
            second = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(second))
            await cancelled(first)
            proxy.release()
            await asyncio.wait_for(second, 5)
            await bus.subscribe(f"{topic}-after")
            assert (await redis.pubsub_numsub(topic))[0][1] == 1, "the topic the second subscribe confirmed is gone"
        finally:
            await bus.close()
            await redis.aclose()


async def test_a_register_cancelled_before_its_confirmation_leaves_nothing_subscribed() -> None:
    # The same through the module: a register cancelled (its worker's session ending, the engine stopping) while
    # its SUBSCRIBE is unconfirmed. Before: no trigger in the engine, the topic subscribed in Redis (NUMSUB 1).
    topic = f"cancel-{uuid.uuid4()}"
    trigger = TriggerInfo(id=f"cancel-{topic}", trigger_type="subscribe", function_id="cancel::f",
                          config={"topic": topic})
    redis = Redis.from_url(REDIS_URL)
    try:
        async with RedisProxy() as proxy, engine_on(proxy.url) as engine:
            module: Any = engine.module("pubsub")
            bus = module._bus
            proxy.hold()
            register = asyncio.create_task(module.register(trigger))
            await until(lambda: topic in bus._confirm)
            await cancelled(register)
            assert topic not in module._subscribers and topic not in module._subscribed
            proxy.release()
            await bus.subscribe(f"{topic}-after")
            assert (await redis.pubsub_numsub(topic))[0][1] == 0, "subscribed in Redis with no trigger in the engine"
            assert topic.encode() not in bus._pubsub.channels
    finally:
        await redis.aclose()
