"""Attack on the queue module's byte bound (F1): one worker subscribed to nothing enqueued 256 KiB jobs to made-up
topics until the in-memory store's ``max_memory_bytes`` (32 MiB) was full (127 jobs over 51 topics, then 310 of one
byte); another worker's enqueue to its own named queue was then refused, until a restart (topic jobs with no
subscriber never expire). Topic jobs now take at most ``max_topic_bytes`` (half of ``max_memory_bytes`` by default)
all together, and those of topics with no subscriber at most ``max_unsubscribed_topic_bytes``; the refusal names the
topic and the setting. With Redis, ``max_topic_bytes`` bounds the topics' JSON in Redis (its ``maxmemory`` filled up
the same way)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_queue_topic_caps import _engine, never

from iii_engine.modules.queue.module import TOPIC_PREFIX
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import MemoryQueueStore
from tests.services import require_redis

pytestmark = pytest.mark.our_engine("configures the queue module's byte bounds")

KiB = 1024
BLOB = "x" * (32 * KiB)


async def flood(worker: ModuleWorker, topics: list[str], most: int = 100) -> tuple[int, dict[str, Any]]:
    """Enqueue BLOB to ``topics`` in turn until one is refused: how many were taken, and the refusal."""
    for n in range(most):
        reply = await worker.call("enqueue", {"topic": topics[n % len(topics)], "data": BLOB})
        if "error" in reply:
            return n, reply["error"]
    raise AssertionError(f"{most} jobs of {len(BLOB)} bytes taken, none refused")


async def enqueue_order(worker: ModuleWorker) -> dict[str, Any]:
    return await worker.call("orders::run", {"id": 1}, action={"type": "enqueue", "queue": "orders"})


async def test_made_up_topics_fill_only_their_bound_and_named_queues_and_subscribed_topics_take_jobs() -> None:
    async with _engine(max_memory_bytes=1024 * KiB, max_unsubscribed_topic_bytes=256 * KiB) as (engine, module), \
            ModuleWorker(engine.url) as hostile, ModuleWorker(engine.url) as victim:
        taken, refused = await flood(hostile, [f"junk{n}" for n in range(20)])
        assert refused["code"] == "enqueue_error"
        assert refused["message"].startswith(f"Topic 'junk{taken % 20}' has no subscriber: a job of ")
        assert refused["message"].endswith("bytes of jobs and dead letters (max_unsubscribed_topic_bytes)")
        assert taken == 7  # 8 jobs of about 33,300 bytes each (32 KiB of data and the job's own) are past 256 KiB
        store = module.store
        assert isinstance(store, MemoryQueueStore)
        assert store.topic_bytes[1] <= 256 * KiB

        # before: "Queue 'orders': a job of 664 bytes does not fit: ... (max_memory_bytes)"
        assert "result" in await enqueue_order(victim)
        got: asyncio.Queue[Any] = asyncio.Queue()

        async def record(data: Any) -> None:
            got.put_nowait(data)

        await victim.function("events::on", record)
        await victim.trigger("events-sub", "queue", "events::on", {"topic": "events"})
        for n in range(3):
            assert "error" not in await victim.call("enqueue", {"topic": "events", "data": {"n": n, "blob": BLOB}})
        assert sorted([(await asyncio.wait_for(got.get(), 5))["n"] for _ in range(3)]) == [0, 1, 2]

        # a subscriber to one of the junk topics takes its bytes out of the unsubscribed count at once (its handler
        # holds them), and leaving gives them back
        before, junk0 = store.topic_bytes[1], store._queues[TOPIC_PREFIX + "junk0"].bytes
        await hostile.function("junk::hold", never)
        await hostile.trigger("junk0-sub", "queue", "junk::hold", {"topic": "junk0"})
        assert store.topic_bytes[1] == before - junk0
        assert "error" not in await hostile.call("enqueue", {"topic": "junk-new", "data": BLOB})
        await hostile.send({"type": "unregistertrigger", "id": "junk0-sub", "trigger_type": "queue"})
        await hostile.sync()
        assert store.topic_bytes[1] == before + store._queues[TOPIC_PREFIX + "junk-new"].bytes


async def test_subscribed_topics_fill_at_most_max_topic_bytes() -> None:
    async with _engine(max_memory_bytes=1024 * KiB) as (engine, module), ModuleWorker(engine.url) as worker:
        await worker.function("busy::hold", never)
        await worker.trigger("busy-sub", "queue", "busy::hold",
                             {"topic": "busy", "queue_config": {"concurrency": 1}})
        taken, refused = await flood(worker, ["busy"])
        assert refused["message"].startswith("Topic 'busy': a job of ")
        assert refused["message"].endswith("of their 524288 bytes of jobs and dead letters (max_topic_bytes)")
        assert taken == 15  # 16 jobs of 33,367 bytes are past 512 KiB
        assert isinstance(module.store, MemoryQueueStore) and module.store.topic_bytes[0] <= 512 * KiB
        assert "result" in await enqueue_order(worker)  # before: refused naming max_memory_bytes


@pytest.mark.redis
async def test_with_redis_topics_fill_at_most_max_topic_bytes_of_it() -> None:
    url, prefix = require_redis(), f"test-topic-bytes-{uuid.uuid4().hex[:8]}:"
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": prefix}}
    try:
        async with _engine(adapter=adapter, max_topic_bytes=256 * KiB) as (engine, module), \
                ModuleWorker(engine.url) as worker:
            taken, refused = await flood(worker, [f"junk{n}" for n in range(20)])
            assert refused["message"].startswith(f"Topic 'junk{taken % 20}': a job of ")
            assert refused["message"].endswith("of their 262144 bytes of jobs and dead letters (max_topic_bytes)")
            assert taken == 7  # before: never refused, Redis filling up to its maxmemory
            assert isinstance(module.store, RedisQueueStore)
            assert 7 * len(BLOB) < await module.store.topic_bytes() <= 256 * KiB
            assert "result" in await enqueue_order(worker)
    finally:
        async with Redis.from_url(url) as admin:
            if keys := [key async for key in admin.scan_iter(match=f"{prefix}*")]:
                await admin.delete(*keys)
