"""The pubsub Redis bus: a subscribe cancelled while Redis has not confirmed its SUBSCRIBE withdraws its topic,
unless another subscribe of it still waits (a register cancelled through the module: see
test_pubsub_redis_subscribe_race). Also the helpers these bus tests share."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
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
    """A deliver that drops what it gets (for tests that look at subscriptions, not messages)."""


def collected() -> tuple[asyncio.Queue[Any], bus_module.Deliver]:
    """A queue, and a deliver that puts each ``(topic, data)`` it gets on it."""
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def deliver(topic: str, data: Any) -> None:
        await got.put((topic, data))

    return got, deliver


@contextlib.asynccontextmanager
async def started_bus(url: str, deliver: bus_module.Deliver = nothing) -> AsyncIterator[bus_module.RedisBus]:
    """A :class:`RedisBus` on ``url``, started with ``deliver``; closed on the way out."""
    bus = bus_module.RedisBus(url)
    await bus.start(deliver)
    try:
        yield bus
    finally:
        await bus.close()


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
    try:
        async with RedisProxy() as proxy, started_bus(proxy.url) as bus:
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
        await redis.aclose()


async def test_a_cancelled_subscribe_leaves_the_topic_to_one_still_waiting() -> None:
    topic = f"cancel-{uuid.uuid4()}"
    redis = Redis.from_url(REDIS_URL)
    try:
        async with RedisProxy() as proxy, started_bus(proxy.url) as bus:
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
        await redis.aclose()


async def test_a_register_waiting_on_a_cancelled_registers_subscribe_subscribes_itself() -> None:
    # Two triggers of one topic: the second waits on the first's SUBSCRIBE. Before, when the first register was
    # cancelled, the second failed too (subscribe_failed "CancelledError()") though Redis was fine, and was dropped.
    topic = f"cancel-{uuid.uuid4()}"

    def trigger(name: str) -> TriggerInfo:
        return TriggerInfo(id=f"{name}-{topic}", trigger_type="subscribe", function_id="cancel::f",
                           config={"topic": topic})

    redis = Redis.from_url(REDIS_URL)
    try:
        async with RedisProxy() as proxy, engine_on(proxy.url) as engine:
            module: Any = engine.module("pubsub")
            bus = module._bus
            proxy.hold()  # the first SUBSCRIBE waits in the proxy
            first = asyncio.create_task(module.register(trigger("first")))
            await until(lambda: topic in bus._confirm)
            second = asyncio.create_task(module.register(trigger("second")))
            await until(lambda: len(module._subscribers.get(topic, {})) == 2)  # it waits on the first's outcome
            await cancelled(first)
            proxy.release()
            await asyncio.wait_for(second, 5)  # before: EngineError subscribe_failed ... CancelledError()
            assert list(module._subscribers[topic]) == [f"second-{topic}"]
            await bus.subscribe(f"{topic}-after")
            assert (await redis.pubsub_numsub(topic))[0][1] == 1
            assert topic.encode() in bus._pubsub.channels  # renewed at a reconnection
    finally:
        await redis.aclose()
