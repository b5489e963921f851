"""A subscriber replaced (registered again under its id) while a message's condition runs for it: the message goes
to neither, since the old one's register was replaced before the answer and the new one was not subscribed when it
was published; the next message reaches the new one only."""

from __future__ import annotations

import asyncio
from typing import Any

from fake_services import FakeServices

from iii_engine.modules.pubsub import PubSubModule
from tests.polling import until


async def test_a_message_in_flight_when_its_subscriber_is_replaced_reaches_neither() -> None:
    services = FakeServices()
    module = PubSubModule(services, {})
    await module.start()
    asked, answer = asyncio.Event(), asyncio.Event()
    old: list[Any] = []
    new: asyncio.Queue[Any] = asyncio.Queue()

    async def slow_condition(data: Any) -> bool:
        asked.set()
        await answer.wait()
        return True

    async def old_handler(data: Any) -> None:
        old.append(data)

    services.add("slow", slow_condition)
    services.add("old", old_handler)
    services.add("new", new.put)
    try:
        await services.trigger("subscribe", "sub", "old", {"topic": "t", "condition_function_id": "slow"})
        await services.call("publish", {"topic": "t", "data": 1})
        await asyncio.wait_for(asked.wait(), 3)
        await services.trigger("subscribe", "sub", "new", {"topic": "t"})
        answer.set()
        await until(lambda: services.fired_calls.in_flight == 0, within=5)
        assert old == [], "a message reached a subscriber replaced before its condition answered"
        await services.call("publish", {"topic": "t", "data": 2})
        assert await asyncio.wait_for(new.get(), 3) == 2  # not 1: it was published before this one subscribed
        assert old == []
    finally:
        await module.stop()
