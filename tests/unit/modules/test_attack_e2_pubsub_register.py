"""Attack E2 on the pubsub module: two triggers of one topic register while its SUBSCRIBE is under way, and it fails.

Before: the second register returned at once (the topic looked subscribed already, being in the subscriber table)
and stayed once the first one's SUBSCRIBE failed: a trigger listed as registered with no subscription at all, which
also made every later subscriber of the topic skip the SUBSCRIBE, so none of them ever got a message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_services import FakeServices

from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub import PubSubModule
from tests.polling import until

pytestmark = pytest.mark.timeout(10)


class RefusingBus:
    """A bus whose SUBSCRIBEs wait for :attr:`answer`, then fail while :attr:`refuse` is set."""

    def __init__(self) -> None:
        self.subscribes: list[str] = []
        self.answer = asyncio.Event()
        self.refuse = True

    async def start(self, deliver: Any) -> None:
        pass

    async def publish(self, topic: str, data: Any) -> None:
        pass

    async def subscribe(self, topic: str) -> None:
        self.subscribes.append(topic)
        await self.answer.wait()
        if self.refuse:
            raise EngineError("subscribe_failed", f"Redis did not subscribe to topic {topic!r}")

    async def unsubscribe(self, topic: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_register_riding_on_a_subscribe_that_fails_fails_too_and_leaves_nothing(
        services: FakeServices, pubsub: PubSubModule) -> None:
    bus = RefusingBus()
    pubsub._bus = bus
    first = asyncio.create_task(services.trigger("subscribe", "t1", "f1", {"topic": "orders"}))
    await until(lambda: bus.subscribes == ["orders"])
    second = asyncio.create_task(services.trigger("subscribe", "t2", "f2", {"topic": "orders"}))
    await until(lambda: "t2" in pubsub._topic_of_trigger)
    assert not second.done(), "registered before the topic's SUBSCRIBE was confirmed"
    bus.answer.set()
    for register in (first, second):
        with pytest.raises(EngineError) as failed:
            await register
        assert failed.value.code == "subscribe_failed"
    assert pubsub._subscribers == {} and pubsub._topic_of_trigger == {}
    # the next trigger of the topic subscribes it again, and stays once Redis confirms
    bus.refuse = False
    await services.trigger("subscribe", "t3", "f3", {"topic": "orders"})
    assert bus.subscribes == ["orders", "orders"]
    assert list(pubsub._subscribers["orders"]) == ["t3"]
    await services.trigger("subscribe", "t4", "f4", {"topic": "orders"})  # subscribed: no second SUBSCRIBE
    assert bus.subscribes == ["orders", "orders"]
