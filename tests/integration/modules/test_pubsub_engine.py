"""PubSub inside real engines: fan-out to every subscribing worker, and across two engines through Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.our_engine("configures the pubsub adapters, two engines on one Redis")

PUBSUB = "modules::pubsub::PubSubModule"


def engine_with(settings: dict[str, Any]) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(PUBSUB, settings)]))


async def subscriber(worker: ModuleWorker, name: str, topic: str, into: asyncio.Queue[Any]) -> None:
    async def handle(data: Any) -> None:
        await into.put((name, data))

    await worker.function(name, handle)
    await worker.trigger(f"sub-{name}", "subscribe", name, {"topic": topic})


async def test_publish_reaches_every_subscriber_and_only_its_topic() -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with engine_with({}) as engine, ModuleWorker(engine.url) as a, ModuleWorker(engine.url) as b:
        await subscriber(a, "a::on", "news", got)
        await subscriber(b, "b::on", "news", got)
        await subscriber(b, "b::other", "sport", got)
        assert await a.result("publish", {"topic": "news", "data": {"h": 1}}) is None
        received = sorted([await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)])
        assert received == [("a::on", {"h": 1}), ("b::on", {"h": 1})]
        await a.result("publish", {"topic": "sport", "data": 2})
        assert await asyncio.wait_for(got.get(), 5) == ("b::other", 2)
        assert got.empty()


@pytest.mark.redis
async def test_redis_adapter_carries_messages_between_engines() -> None:
    settings = {
        "adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": "redis://127.0.0.1:6379/0"}}
    }
    topic = f"t-{uuid.uuid4()}"
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with engine_with(settings) as one, engine_with(settings) as two:
        async with ModuleWorker(one.url) as publisher, ModuleWorker(two.url) as listener:
            await subscriber(listener, "remote::on", topic, got)
            await publisher.result("publish", {"topic": topic, "data": {"big": 2**70}})
            assert await asyncio.wait_for(got.get(), 5) == ("remote::on", {"big": 2**70})
