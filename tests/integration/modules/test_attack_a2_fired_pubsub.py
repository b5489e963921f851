"""Attack on the max_fired_calls bound (A2) in pub/sub, real engines.

A message from Redis waits for room in the engine (up to ``fire_wait_timeout_ms``); that wait must not hold up the
bus's other work: a new subscription is live only once Redis confirms it, and that confirmation comes on the same
connection as the messages.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from test_fired_calls_bound import Slow, engine_with, until

from iii_engine import ModuleSpec
from iii_engine.modules.base import TriggerInfo

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls bound")]

REDIS_PUBSUB = ModuleSpec("modules::pubsub::PubSubModule", {
    "adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": "redis://127.0.0.1:6379/0"}}})


@pytest.mark.redis
async def test_a_subscription_is_confirmed_while_a_message_from_redis_waits_for_room() -> None:
    busy, quiet = f"busy-{uuid.uuid4()}", f"quiet-{uuid.uuid4()}"
    held = Slow()
    async with engine_with(REDIS_PUBSUB, limit=100) as one, engine_with(REDIS_PUBSUB, limit=1, wait_ms=20_000) as two:
        async with ModuleWorker(one.url) as publisher, ModuleWorker(two.url) as listener:
            await listener.function("held::on", held)
            await listener.trigger("held", "subscribe", "held::on", {"topic": busy})
            for n in range(2):
                assert "error" not in await publisher.call("publish", {"topic": busy, "data": n})
            assert await held.next() == 0  # holds the only slot; message 1 waits for it
            await until(lambda: two.fired_calls.waiting == 1)
            module: Any = two.modules["pubsub"]
            subscribe = TriggerInfo(id="quiet", trigger_type="subscribe", function_id="held::on",
                                    config={"topic": quiet})
            # before: the confirmation waited behind message 1 (up to fire_wait_timeout_ms, here 20 s)
            await asyncio.wait_for(module.register(subscribe), 3)
            assert two.fired_calls.waiting == 1  # message 1 still waits
            await held.let_go()
            assert await held.next() == 1
            await held.let_go()
            assert "error" not in await publisher.call("publish", {"topic": quiet, "data": 2})
            assert await held.next() == 2  # the new subscription is live
            await held.let_go()
            await until(lambda: two.fired_calls.in_flight == 0)
