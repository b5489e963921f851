"""Attack E2 on the pubsub Redis adapter's reconnection: what it renews when the connection comes back.

redis-py renews, on every reconnection, each channel it still lists. Before: a topic whose UNSUBSCRIBE failed
during an outage (the last trigger of it unregistered meanwhile) was subscribed again once Redis was back, for the
engine's life (every message on it read and dropped), and so was a topic whose SUBSCRIBE was sent but not confirmed
in time (the trigger refused with subscribe_failed; Redis confirmed it later).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from test_engine_attack_pubsub import REDIS_HOST, REDIS_PORT, RedisProxy, engine_on, listen, publish_until_received

from iii_engine.modules.pubsub import bus as pubsub_bus
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("configures the pubsub Redis adapter through a proxy")]


class DownableProxy(RedisProxy):
    """A :class:`RedisProxy` that can also refuse connections (:meth:`down`) and accept them again (:meth:`up`)."""

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self.cut()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)


async def subscribers_in_redis(redis: Redis, topic: str) -> int:
    return int((await redis.pubsub_numsub(topic))[0][1])


async def test_a_topic_unsubscribed_while_redis_was_down_is_not_renewed_when_it_is_back() -> None:
    topic = f"ae2-{uuid.uuid4()}"
    redis = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        async with DownableProxy() as proxy, engine_on(proxy.url) as engine, ModuleWorker(engine.url) as worker:
            bus: Any = engine.module("pubsub")._bus
            got = await listen(worker, "ae2::on", "ae2-sub", topic)
            await publish_until_received(redis, topic, got)
            assert await subscribers_in_redis(redis, topic) == 1
            await proxy.down()
            await until(lambda: bus._lost_at is not None)
            await worker.send({"type": "unregistertrigger", "id": "ae2-sub", "trigger_type": "subscribe"})
            await worker.sync()
            await proxy.up()
            await until(lambda: bus._lost_at is None)  # back, its subscriptions renewed
            # a topic still wanted, subscribed after the renewal: once it is live, the renewal is over
            await publish_until_received(redis, f"{topic}-2", await listen(worker, "ae2::on2", "ae2-sub2",
                                                                          f"{topic}-2"))
            assert await subscribers_in_redis(redis, topic) == 0
    finally:
        await redis.aclose()


async def test_a_subscribe_not_confirmed_in_time_leaves_no_subscription_in_redis(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pubsub_bus, "_SUBSCRIBE_TIMEOUT_S", 0.5)
    topic = f"ae2-{uuid.uuid4()}"
    redis = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        async with DownableProxy() as proxy, engine_on(proxy.url) as engine, ModuleWorker(engine.url) as worker:
            await worker.function("ae2::late", lambda data: None)
            proxy.hold()  # the SUBSCRIBE waits in the proxy past the confirmation's deadline
            await worker.send({"type": "registertrigger", "id": "ae2-late", "trigger_type": "subscribe",
                               "function_id": "ae2::late", "config": {"topic": topic}})
            await worker.sync()  # answered once the register failed
            proxy.release()  # Redis now gets the SUBSCRIBE (and, since the fix, the UNSUBSCRIBE after it)
            other = f"{topic}-2"
            await publish_until_received(redis, other, await listen(worker, "ae2::on2", "ae2-sub2", other))
            assert await subscribers_in_redis(redis, topic) == 0
    finally:
        await redis.aclose()


async def test_a_publish_to_a_stalled_redis_fails_in_bounded_time_naming_the_topic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # before: the PUBLISH waited for Redis's reply for good (no socket timeout), holding its caller's call count
    monkeypatch.setattr(pubsub_bus, "_REDIS_TIMEOUT_S", 0.5, raising=False)
    topic = f"ae2-{uuid.uuid4()}"
    async with DownableProxy() as proxy, engine_on(proxy.url) as engine, ModuleWorker(engine.url) as worker:
        assert (await worker.call("publish", {"topic": topic, "data": 1})).get("error") is None
        proxy.hold()  # Redis stalls: takes the connection's bytes, never answers
        answer = await asyncio.wait_for(worker.call("publish", {"topic": topic, "data": 2}), 5)
        assert answer["error"]["code"] == "publish_failed"
        assert topic in answer["error"]["message"]
        proxy.release()
        assert (await worker.call("publish", {"topic": topic, "data": 3})).get("error") is None


async def test_unsubscribes_failing_during_an_outage_are_logged_rate_limited(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, each failed UNSUBSCRIBE logged its own warning: 1,266 lines in 10 s of an outage (``sr5b.log``).
    (With the connection down nothing is sent at all now; this breaks the writes on a connection still up.)"""
    async with RedisProxy() as proxy:
        bus = pubsub_bus.RedisBus(proxy.url)

        async def deliver(topic: str, data: Any) -> None:
            return None

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RedisConnectionError("Connection closed by server.")

        await bus.start(deliver)
        with caplog.at_level(logging.WARNING, logger=pubsub_bus.__name__):
            try:
                monkeypatch.setattr(bus._pubsub.connection, "send_packed_command", broken)
                for i in range(20):
                    await bus.unsubscribe(f"ae2-{i}")
            finally:
                await bus.close()  # logs the count not logged yet
    lines = [r.getMessage() for r in caplog.records
             if r.name == pubsub_bus.__name__ and "UNSUBSCRIBE" in r.getMessage()]
    # before: 20 lines "pubsub: Redis UNSUBSCRIBE of topic 'ae2-0' failed (...)", one per topic
    assert lines == [
        "pubsub: 1 Redis UNSUBSCRIBEs failed (1 in all); latest of topic 'ae2-0' (ConnectionError: Connection closed "
        "by server.); their topics' messages are dropped here",
        "pubsub: 19 Redis UNSUBSCRIBEs failed (20 in all); their topics' messages are dropped here"]
    assert bus.unsubscribe_failures == 20
