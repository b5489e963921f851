"""The pubsub Redis bus while messages wait for room in the engine (max_fired_calls): the reader keeps reading its
connection (SUBSCRIBE confirmations come on it), drops and counts what is past the bound, and topics are delivered
in turns, so one backed-up topic holds up no other for more than a message's wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_fired_calls_bound import Slow, engine_with

from iii_engine import Engine, ModuleSpec
from iii_engine.modules.pubsub import bus as bus_module
from iii_engine.modules.pubsub.backlog import Backlog
from tests.integration.streams.private_redis import PrivateRedis
from tests.polling import until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("our pubsub Redis bus and its max_fired_calls waits")]


def redis_pubsub(url: str) -> ModuleSpec:
    return ModuleSpec("modules::pubsub::PubSubModule",
                      {"adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": url}}})


@pytest.fixture(autouse=True)
def small_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-ahead bounds these tests fill, smaller than the defaults (131,072 messages, 48 MiB) so that filling
    them is quick, and no per-message overhead so the counts below are exact."""
    monkeypatch.setattr(bus_module, "_READ_AHEAD_MESSAGES", 1024)
    monkeypatch.setattr(bus_module, "_READ_AHEAD_BYTES", 16 * 1024 * 1024)
    monkeypatch.setattr(bus_module, "_MESSAGE_OVERHEAD", 0)


@contextlib.asynccontextmanager
async def one_slot_engine(tmp_path: Path) -> AsyncIterator[tuple[Redis, Engine, ModuleWorker]]:
    """A private Redis (a client of it), an engine on it with room for one fired call, and a worker of it."""
    with PrivateRedis(tmp_path) as server:
        await server.start()
        redis = Redis.from_url(server.url)
        try:
            async with engine_with(redis_pubsub(server.url), limit=1, wait_ms=20_000) as engine:
                async with ModuleWorker(engine.url) as worker:
                    yield redis, engine, worker
        finally:
            await redis.aclose()


async def published(redis: Redis, topic: str, payloads: list[Any]) -> None:
    """PUBLISH each payload (JSON) to ``topic``, in order, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for payload in payloads:
            pipe.publish(topic, json.dumps(payload))
        await pipe.execute()


async def test_a_new_topic_is_subscribed_and_delivered_while_another_has_more_waiting_than_the_bound(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The attack's set-up, shrunk: the only slot held by a subscriber of "hot" that does not answer, 3,000 more
    # messages of "hot" published. Before, the reader stopped reading at 1,024 waiting: a subscribe trigger for
    # "cold" was refused after 10 s ("no confirmation within 10 s") with Redis healthy, and a message for "cold"
    # would have waited behind every "hot" one, each for up to fire_wait_timeout_ms.
    hot, cold = f"hot-{uuid.uuid4()}", f"cold-{uuid.uuid4()}"
    held = Slow()
    quiet: asyncio.Queue[Any] = asyncio.Queue()

    async def on_cold(data: Any) -> None:
        await quiet.put(data)

    async with one_slot_engine(tmp_path) as (redis, engine, worker):
        await worker.function("hot::on", held)
        await worker.function("cold::on", on_cold)
        await worker.trigger("hot", "subscribe", "hot::on", {"topic": hot})
        await published(redis, hot, [0])
        assert await held.next() == 0  # holds the only slot: the rest wait
        await published(redis, hot, list(range(1, 3001)))
        started = time.monotonic()
        await worker.trigger("cold", "subscribe", "cold::on", {"topic": cold})
        assert time.monotonic() - started < 2
        assert await redis.publish(cold, json.dumps("cold")) == 1  # subscribed in Redis
        bus: Any = engine.modules["pubsub"]._bus  # type: ignore[attr-defined]
        # read to the end (the SUBSCRIBE's reply came after them): what did not fit was dropped, counted
        await until(lambda: bus._received.messages + bus.undelivered == 3000)  # 1 waits for its room
        assert bus._received.messages == bus_module._READ_AHEAD_MESSAGES
        assert "wait for room in the engine already (at most 1024, 16777216 bytes)" in caplog.text
        # "cold" took the room of hot's newest; its turn comes after the hot message waiting now and
        # the one whose turn was before "cold" came (before the fix: after every hot message queued)
        for expected in (1, 2):
            await held.let_go()
            assert await held.next() == expected
        await held.let_go()
        assert await asyncio.wait_for(quiet.get(), 5) == "cold"
        assert await held.next() == 3  # "hot" goes on in order
        assert bus._received.messages > 1000
        await held.let_go()


async def test_messages_past_the_byte_bound_are_dropped_and_another_topic_still_gets_room(tmp_path: Path) -> None:
    # Read ahead while the engine has no room: within 16 MiB (a message may be as large as a frame), the rest dropped
    # and counted, and a small message for another topic evicts the newest of the topic holding the most.
    hot, cold = f"big-{uuid.uuid4()}", f"small-{uuid.uuid4()}"
    held = Slow()
    async with one_slot_engine(tmp_path) as (redis, engine, worker):
        await worker.function("held::on", held)
        await worker.trigger("big", "subscribe", "held::on", {"topic": hot})
        await worker.trigger("small", "subscribe", "held::on", {"topic": cold})
        assert engine.fired_calls.try_take()  # no room
        bus: Any = engine.modules["pubsub"]._bus  # type: ignore[attr-defined]
        # 1 MiB each as they go over Redis, numbered
        await published(redis, hot, [f"{n:02d}" + "x" * (1024 * 1024 - 4) for n in range(24)])
        await published(redis, cold, ["small"])
        await until(lambda: bus.undelivered >= 8)  # before: none, the reader stopped (Redis held them)
        await until(lambda: bus._received.messages + bus.undelivered == 24)  # 1 waits for its room
        assert bus._received.bytes <= bus_module._READ_AHEAD_BYTES
        assert 8 <= bus.undelivered <= 9  # 15 or 16 of 1 MiB fit in 16 MiB, "small" in hot's newest's
        engine.fired_calls.release()
        seen = []
        for _ in range(25 - bus.undelivered):
            data = await held.next()
            seen.append(data if data == "small" else int(data[:2]))
            await held.let_go()
        assert seen.index("small") <= 2  # not behind hot's 15
        numbers = [n for n in seen if n != "small"]
        assert numbers == list(range(len(numbers)))  # in order, the newest dropped


def test_the_backlog_keeps_its_bounds_each_topics_order_and_gives_every_topic_its_turn() -> None:
    # Random arrivals and takes against the bounds: what is taken of a topic comes in the order it was put (gaps
    # only where messages were dropped), and a topic with a message queued is taken within one turn of each other.
    rng = random.Random(7)
    backlog = Backlog(max_messages=50, max_bytes=2000)
    sent: dict[str, int] = {}
    last_taken: dict[str, int] = {}
    dropped = taken = 0
    for _ in range(20_000):
        if rng.random() < 0.6:
            topic = rng.choice(["hot", "hot", "hot", "warm", "cold", "rare"])
            sent[topic] = sent.get(topic, 0) + 1
            dropped += len(backlog.put(topic, b"%d:" % sent[topic] + b"x" * rng.randrange(0, 200)))
            assert backlog.messages <= 50 and backlog.bytes <= 2000
        else:
            queued = {topic for topic, queue in backlog._queues.items() if queue}
            for _turn in range(len(queued)):  # one round: every topic queued at its start gets a message
                item = backlog.take()
                assert item is not None
                topic, raw = item
                queued.discard(topic)
                number = int(raw.split(b":")[0])
                assert number > last_taken.get(topic, 0)
                last_taken[topic] = number
                taken += 1
            assert not queued
    assert taken + dropped + backlog.messages == sum(sent.values())
    assert dropped > 0 and all(last_taken.get(topic) for topic in sent)


def test_a_large_message_that_one_eviction_cannot_make_room_for_evicts_nothing() -> None:
    # Re-attack: each eviction was made while the newcomer still did not fit, and then it was dropped too: one 1 MiB
    # message took 952 queued messages of another topic with it (one of 20 MiB, 59,997). Now one message makes way
    # at most, and only when that makes room.
    backlog = Backlog(max_messages=1000, max_bytes=1000)
    for _ in range(4):
        assert backlog.put("big", b"B" * 200) == []
    for _ in range(100):
        assert backlog.put("small", b"s") == []
    assert backlog.put("big", b"B" * 200) == [("big", b"B" * 200)]  # only itself
    assert (backlog.messages, backlog.bytes) == (104, 900)
    # when full, a small newcomer of a quiet topic still takes the room of the busiest topic's newest
    for _ in range(100):
        assert backlog.put("tiny", b"t") == []
    assert backlog.bytes == 1000
    assert backlog.put("quiet", b"q") == [("small", b"s")]
