"""Attack on the max_fired_calls bound (A2) in pub/sub, real engines.

A message from Redis waits for room in the engine (up to ``fire_wait_timeout_ms``); that wait must not hold up the
bus's other work: a new subscription is live only once Redis confirms it, and that confirmation comes on the same
connection as the messages.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_fired_calls_bound import Slow, engine_with, until

from iii.iii_types import TriggerInfo
from iii_engine import ModuleSpec

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


@pytest.mark.redis
async def test_messages_from_redis_waiting_for_room_are_read_ahead_within_a_byte_bound() -> None:
    """Messages read while the engine has no room are bounded in bytes too (48 MiB, each message counting 128 bytes
    besides its payload), not only in count: a burst of 24 MiB is read ahead whole and delivered in order, none
    dropped (the reader keeps reading: what Redis held for a reader that stopped, the engine holds now). Before:
    1,024 read ahead, whatever their size (4 MiB each would be 4 GiB)."""
    topic = f"big-{uuid.uuid4()}"
    held = Slow()
    async with engine_with(REDIS_PUBSUB, limit=1, wait_ms=20_000) as engine:
        async with ModuleWorker(engine.url) as listener:
            await listener.function("held::on", held)
            await listener.trigger("held", "subscribe", "held::on", {"topic": topic})
            assert engine.fired_calls.try_take()  # no room
            bus: Any = engine.modules["pubsub"]._bus  # type: ignore[attr-defined]
            redis = Redis.from_url("redis://127.0.0.1:6379/0")
            try:
                payload = json.dumps("x" * (1024 * 1024 - 2))  # 1 MiB as it goes over Redis
                for _ in range(24):
                    await redis.publish(topic, payload)
                await until(lambda: engine.fired_calls.waiting == 1)  # the first one waits for room
                await redis.publish(topic, json.dumps("last"))  # read after every earlier one
                await until(lambda: len(bus._received) == 24)  # all but the one delivering
                assert bus.undelivered == 0 and bus._received.bytes <= 48 * 1024 * 1024
                engine.fired_calls.release()
                for _ in range(24):
                    assert len(await held.next()) == 1024 * 1024 - 2
                    await held.let_go()
                assert await held.next() == "last"  # and the rest came in order once there was room
                await held.let_go()
            finally:
                await redis.aclose()
