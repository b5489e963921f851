"""A FIFO topic's type is kept in the Redis store, so an engine making the topic by an enqueue (restarted with its
producers first, or sharing the store with the subscriber's engine) stamps the jobs for the FIFO lane.

Before: the type lived in the subscriber's engine's memory alone; after a restart with producers first, 6 jobs of a
FIFO topic ran in the order [0, 3, 4, 5, 1, 2], 4 at once, and with two engines on one Redis all 6 ran at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.module import TOPIC_PREFIX
from iii_streams.redis import escape_name

pytestmark = pytest.mark.our_engine("FIFO topic type kept in Redis")

QUEUE = "modules::queue::QueueModule"
REDIS_URL = "redis://127.0.0.1:6379/0"


@asynccontextmanager
async def _prefix() -> AsyncIterator[str]:
    prefix = f"test-qfifo-{uuid.uuid4()}:"
    try:
        yield prefix
    finally:
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _engine(prefix: str) -> Engine:
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": REDIS_URL, "key_prefix": prefix}}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, {"adapter": adapter})]))


async def _lanes(prefix: str, topic: str) -> int:
    client = Redis.from_url(REDIS_URL)
    try:
        return len([k async for k in client.scan_iter(
            match=f"{prefix}queue:{escape_name(TOPIC_PREFIX + topic)}:lane:*")])
    finally:
        await client.aclose()


async def _hang(data: Any) -> None:
    await asyncio.Event().wait()  # holds its job's lane: the lanes stay to be counted


async def _enqueue_three(prefix: str) -> int:
    """Enqueue 3 jobs to the topic on an engine where nobody subscribes to it; the topic's lanes then."""
    async with _engine(prefix) as second, ModuleWorker(second.url) as producer:
        for n in range(3):
            assert await producer.result("enqueue", {"topic": "orders", "data": n}) is None
        return await _lanes(prefix, "orders")


@pytest.mark.parametrize("shared", [False, True], ids=["restarted", "two engines"])
async def test_enqueues_before_the_fifo_subscriber_registers_use_the_fifo_lane(shared: bool) -> None:
    async with _prefix() as prefix:
        async with _engine(prefix) as first, ModuleWorker(first.url) as subscriber:
            await subscriber.function("sub::h", _hang)
            await subscriber.trigger("t", "queue", "sub::h",
                                     {"topic": "orders", "queue_config": {"type": "fifo", "concurrency": 1}})
            lanes = await _enqueue_three(prefix) if shared else None
        if not shared:  # a restart, its producers back before the subscriber
            lanes = await _enqueue_three(prefix)
        assert lanes == 1  # was 3: one lane per job, run at once


async def test_enqueues_made_together_all_wait_for_the_kept_type() -> None:
    """Enqueues arriving while the first one read the kept type stamped their jobs standard before (6 lanes, run at
    once, out of order)."""
    async with _prefix() as prefix:
        async with _engine(prefix) as first, ModuleWorker(first.url) as subscriber:
            await subscriber.function("sub::h", _hang)
            await subscriber.trigger("t", "queue", "sub::h",
                                     {"topic": "orders", "queue_config": {"type": "fifo", "concurrency": 1}})
        async with _engine(prefix) as second, ModuleWorker(second.url) as producer:
            await asyncio.gather(*(producer.result("enqueue", {"topic": "orders", "data": n}) for n in range(6)))
            assert await _lanes(prefix, "orders") == 1


async def test_a_type_taken_back_in_the_store_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A topic once read FIFO kept one lane for good on an engine without its subscriber, its jobs waiting behind a
    hung one after the subscriber went standard elsewhere."""
    from iii_engine.modules.queue import module as queue_module

    monkeypatch.setattr(queue_module, "FIFO_READ_INTERVAL_S", 0.0)  # (read at every enqueue, not once a second)
    async with _prefix() as prefix:
        async with _engine(prefix) as first, ModuleWorker(first.url) as subscriber:
            await subscriber.function("sub::h", _hang)
            await subscriber.trigger("t", "queue", "sub::h",
                                     {"topic": "orders", "queue_config": {"type": "fifo", "concurrency": 1}})
        async with _engine(prefix) as second, ModuleWorker(second.url) as producer:
            assert await producer.result("enqueue", {"topic": "orders", "data": 0}) is None
            assert await _lanes(prefix, "orders") == 1
            client = Redis.from_url(REDIS_URL)
            try:  # what a standard subscriber's registration does elsewhere
                assert await client.delete(f"{prefix}queue:{escape_name(TOPIC_PREFIX + 'orders')}:fifo") == 1
            finally:
                await client.aclose()
            for n in range(1, 4):
                assert await producer.result("enqueue", {"topic": "orders", "data": n}) is None
            assert await _lanes(prefix, "orders") == 4  # standard: a lane each (was 1: all behind the first)
