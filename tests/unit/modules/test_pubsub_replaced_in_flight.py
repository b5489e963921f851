"""A subscriber replaced (registered again under its id) while a message's condition runs for it: the message goes
to neither, since the old one's register was replaced before the answer and the new one was not subscribed when it
was published; the next message reaches the new one only."""

from __future__ import annotations

import asyncio

from fake_services import FakeServices, SlowCondition

from iii_engine.modules.pubsub import PubSubModule
from tests.polling import until


async def test_a_message_in_flight_when_its_subscriber_is_replaced_reaches_neither(
        services: FakeServices, pubsub: PubSubModule, slow_condition: SlowCondition) -> None:
    old = services.collect("old")
    new = services.queue_calls("new")
    await services.trigger("subscribe", "sub", "old", {"topic": "t", "condition_function_id": "slow"})
    await services.call("publish", {"topic": "t", "data": 1})
    await asyncio.wait_for(slow_condition.asked.wait(), 3)
    await services.trigger("subscribe", "sub", "new", {"topic": "t"})
    slow_condition.answer.set()
    await until(lambda: services.fired_calls.in_flight == 0, within=5)
    assert old == [], "a message reached a subscriber replaced before its condition answered"
    await services.call("publish", {"topic": "t", "data": 2})
    assert await asyncio.wait_for(new.get(), 3) == 2  # not 1: it was published before this one subscribed
    assert old == []
