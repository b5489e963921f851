"""The pubsub Redis bus: two subscribes of one topic waiting on the same confirmation, the first giving up; a
register replaced while it unsubscribes its previous topic."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from test_engine_attack_pubsub import RedisProxy, engine_on

from iii.iii_types import TriggerInfo
from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub import bus as bus_module
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("drives the pubsub Redis bus through a proxy")]

REDIS_URL = "redis://127.0.0.1:6379/0"


def waits_for_confirmation(task: asyncio.Task[None]) -> bool:
    """The subscribe in ``task`` sent its SUBSCRIBE and waits for Redis to confirm it (its timeout is running): the
    subscribe itself awaits ``wait_for``. Not any ``wait_for`` down the chain: redis-py's own, while it still sends
    the SUBSCRIBE, looked the same, and the test then set the next timeout before this one read its own (both
    subscribes waited 10 s and failed together: a floors CI run)."""
    subscribe: Any = task.get_coro()
    return getattr(getattr(subscribe, "cr_await", None), "__name__", "") == "wait_for"


async def test_a_subscribe_that_gives_up_leaves_the_topic_to_one_still_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The module subscribes a topic again when its last trigger left while the first SUBSCRIBE was unconfirmed
    # (unregistered, or registered again elsewhere). Before: the first subscribe, giving up, sent an UNSUBSCRIBE
    # after the second's SUBSCRIBE; the second then returned confirmed, and the topic was unsubscribed in Redis and
    # forgotten for reconnections: that trigger got nothing, for good.
    topic = f"race-{uuid.uuid4()}"
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def deliver(delivered_topic: str, data: Any) -> None:
        await got.put((delivered_topic, data))

    redis = Redis.from_url(REDIS_URL)
    async with RedisProxy() as proxy:
        bus = bus_module.RedisBus(proxy.url)
        await bus.start(deliver)
        try:
            proxy.hold()  # Redis stalls: the SUBSCRIBEs wait in the proxy
            monkeypatch.setattr(bus_module, "_SUBSCRIBE_TIMEOUT_S", 0.3)
            first = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(first))
            monkeypatch.setattr(bus_module, "_SUBSCRIBE_TIMEOUT_S", 10.0)
            second = asyncio.create_task(bus.subscribe(topic))
            await until(lambda: waits_for_confirmation(second))
            # the reason, not "TimeoutError: " with nothing after it
            with pytest.raises(EngineError, match=r"subscribe_failed: .*: no confirmation within 0\.3 s$"):
                await first
            proxy.release()
            await asyncio.wait_for(second, 5)
            # a later SUBSCRIBE's confirmation: every command sent before it has been done by Redis
            await bus.subscribe(f"{topic}-after")
            assert (await redis.pubsub_numsub(topic))[0][1] == 1, "the topic the second subscribe confirmed is gone"
            await redis.publish(topic, json.dumps("hello"))
            assert await asyncio.wait_for(got.get(), 5) == (topic, "hello")
        finally:
            await bus.close()
            await redis.aclose()


async def test_a_register_replaced_while_it_unsubscribes_its_old_topic_leaves_its_new_topic_unsubscribed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the register, once its UNSUBSCRIBE of the old topic was sent, subscribed its new topic although an
    # unregister of the id had come meanwhile (and unsubscribed it): the topic stayed subscribed in Redis with no
    # trigger in the engine, renewed at every reconnection (270 such channels after 8 s of 10 workers
    # re-registering 3 ids; every message on them read and dropped).
    old, new = f"race-{uuid.uuid4()}-old", f"race-{uuid.uuid4()}-new"

    def trigger(topic: str) -> TriggerInfo:
        return TriggerInfo(id=f"race-{old}", trigger_type="subscribe", function_id="race::f", config={"topic": topic})

    redis = Redis.from_url(REDIS_URL)
    try:
        async with engine_on(REDIS_URL) as engine:
            module: Any = engine.module("pubsub")
            bus = module._bus
            await module.register(trigger(old))
            unsubscribe = bus.unsubscribe
            sending, sent = asyncio.Event(), asyncio.Event()

            async def slow_unsubscribe(topic: str) -> None:
                if topic == old:  # the UNSUBSCRIBE of the old topic is slow to go out: the unregister comes first
                    sending.set()
                    await sent.wait()
                await unsubscribe(topic)

            monkeypatch.setattr(bus, "unsubscribe", slow_unsubscribe)
            register = asyncio.create_task(module.register(trigger(new)))
            await sending.wait()
            await module.unregister(trigger(new))
            sent.set()
            await asyncio.wait_for(register, 5)
            # a later SUBSCRIBE's confirmation: every command sent before it has been done by Redis
            await bus.subscribe(f"{new}-after")
            assert new not in module._subscribers
            assert (await redis.pubsub_numsub(new))[0][1] == 0, "subscribed in Redis with no trigger in the engine"
            assert new.encode() not in bus._pubsub.channels  # nor renewed at a reconnection
            assert (await redis.pubsub_numsub(old))[0][1] == 0
    finally:
        await redis.aclose()


@pytest.mark.parametrize("ended", ["unregistered", "cancelled"])
async def test_a_register_ended_while_its_subscribe_is_unconfirmed_returns_at_once_leaving_nothing(
        ended: str) -> None:
    # Unregistered: before, the unregister's UNSUBSCRIBE left the register waiting out the whole 10 s for a
    # confirmation that, its SUBSCRIBE lost with a connection, never came, and then reporting subscribe_failed with
    # Redis healthy (reg_unreg_reconnect.py: 8 of 8 rounds, 85 s). Here Redis stalls instead; the wait is the same.
    # Cancelled (its worker's session ending, the engine stopping): before, the topic stayed subscribed in Redis
    # (NUMSUB 1) with no trigger in the engine, and in redis-py's channels, renewed at every reconnection.
    topic = f"race-{uuid.uuid4()}"
    trigger = TriggerInfo(id=f"race-{topic}", trigger_type="subscribe", function_id="race::f",
                          config={"topic": topic})
    redis = Redis.from_url(REDIS_URL)
    try:
        async with RedisProxy() as proxy, engine_on(proxy.url) as engine:
            module: Any = engine.module("pubsub")
            bus = module._bus
            proxy.hold()  # the SUBSCRIBE waits in the proxy: no confirmation
            register = asyncio.create_task(module.register(trigger))
            await until(lambda: topic in bus._confirm)
            if ended == "unregistered":
                await module.unregister(trigger)
                # before: TimeoutError here (the register still waited for its confirmation)
                await asyncio.wait_for(register, 5)
            else:
                register.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await register
            assert topic not in module._subscribers and topic not in bus._confirm
            proxy.release()
            # a later SUBSCRIBE's confirmation: every command sent before it has been done by Redis
            await bus.subscribe(f"{topic}-after")
            assert (await redis.pubsub_numsub(topic))[0][1] == 0, "subscribed in Redis with no trigger in the engine"
            assert topic.encode() not in bus._pubsub.channels  # nor renewed at a reconnection
    finally:
        await redis.aclose()


async def test_a_subscribe_confirmed_for_a_topic_no_longer_wanted_is_unsubscribed() -> None:
    # A SUBSCRIBE can reach Redis after its topic's UNSUBSCRIBE: redis-py's renewal of the channels at a
    # reconnection, or (before) a subscribe in another task reconnecting on its own. Before, the topic then stayed
    # subscribed with no trigger, kept in redis-py's channels and renewed at every reconnection (stall_race.py,
    # seeds 5-10: 1 to 4 such channels). Here the bus's connection gets such a SUBSCRIBE directly.
    topic = f"race-{uuid.uuid4()}"
    redis = Redis.from_url(REDIS_URL)
    try:
        async with engine_on(REDIS_URL) as engine:
            bus = engine.module("pubsub")._bus  # type: ignore[union-attr]
            await bus._pubsub.connection.send_command("SUBSCRIBE", topic)
            # a later SUBSCRIBE's confirmation, then its UNSUBSCRIBE's: Redis has done what came before
            await bus.subscribe(f"{topic}-after")
            await bus.unsubscribe(f"{topic}-after")
            await until(lambda: topic.encode() not in bus._pubsub.channels and not getattr(bus, "_syncs", ()))
            await bus.subscribe(f"{topic}-after2")
            # before: 1 (subscribed in Redis with no trigger in the engine)
            assert (await redis.pubsub_numsub(topic))[0][1] == 0
    finally:
        await redis.aclose()
