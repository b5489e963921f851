"""PubSub against a fake engine: fan-out, topic isolation, conditions, and the Redis bus on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from fake_services import FakeServices, started

from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub import PubSubModule

REDIS_CONFIG = {
    "adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": "redis://127.0.0.1:6379/0"}}
}


def collector(services: FakeServices, function_id: str, into: asyncio.Queue[Any]) -> None:
    async def handle(data: Any) -> None:
        await into.put((function_id, data))

    services.add(function_id, handle)


@pytest.mark.parametrize("config", [{}, pytest.param(REDIS_CONFIG, marks=pytest.mark.redis)], ids=["local", "redis"])
async def test_publish_fans_out_to_every_subscriber_of_the_topic(
        services: FakeServices, config: dict[str, Any]) -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()
    for fid in ("a", "b", "other"):
        collector(services, fid, got)
    topic = f"orders-{uuid.uuid4()}"
    async with started(PubSubModule(services, config)) as module:
        await services.trigger("subscribe", "t1", "a", {"topic": topic})
        await services.trigger("subscribe", "t2", "b", {"topic": topic})
        await services.trigger("subscribe", "t3", "other", {"topic": f"{topic}-other"})
        assert await services.call("publish", {"topic": topic, "data": {"n": 1}}) is None
        received = [await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)]
        assert sorted(received, key=lambda r: r[0]) == [("a", {"n": 1}), ("b", {"n": 1})]
        # Unsubscribed functions get nothing more; a marker message proves ordering.
        await module.unregister(await services.trigger("subscribe", "t2", "b", {"topic": topic}))
        await services.call("publish", {"topic": topic, "data": "second"})
        assert await asyncio.wait_for(got.get(), 5) == ("a", "second")
        assert got.empty()


async def test_empty_topic_and_conditions(services: FakeServices, pubsub: PubSubModule) -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()
    collector(services, "h", got)

    async def positive(data: Any) -> bool:
        return bool(data > 0)

    services.add("positive", positive)
    with pytest.raises(EngineError) as empty:
        await services.call("publish", {"topic": "", "data": 1})
    assert empty.value.code == "topic_not_set"
    await services.trigger("subscribe", "nothing", "h", {})  # warning only, not an error
    await services.trigger("subscribe", "c", "h", {"topic": "n", "condition_function_id": "positive"})
    await services.call("publish", {"topic": "n", "data": -1})
    await services.call("publish", {"topic": "n", "data": 2})
    assert await asyncio.wait_for(got.get(), 5) == ("h", 2)
