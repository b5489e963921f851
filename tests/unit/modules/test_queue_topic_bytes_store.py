"""The topics' byte count (``TopicShare``) in both queue stores: after a random mix of every step that stores,
changes or removes a job or a dead letter (push, claim, retry with a new payload, dead letter, ack, redrive, discard)
on topic and named queues, the count equals what the topic queues really hold (in memory: what ``max_bytes`` counts;
in Redis: the JSON of their jobs and dead letters), the in-memory count of topics marked unsubscribed follows the
marks, and a push past either bound is refused naming it. Before, topic jobs were counted only with every other
queue's (one worker's enqueues to made-up topics filled the store: named queues were refused until a restart)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from iii_engine.modules.queue.redis_store import TOPIC_BYTES_KEY, RedisQueueStore, _Keys
from iii_engine.modules.queue.store import (
    DeadLetter,
    Job,
    MemoryQueueStore,
    QueueFull,
    QueueStore,
    StoreFull,
    TopicShare,
)
from tests.services import require_redis

PREFIX = "__topic::"
QUEUES = ("__fn_queue::a", "__topic::b", "__topic::c", "__topic::d")
TOPICS = [name for name in QUEUES if name.startswith(PREFIX)]


async def real_topic_bytes(store: QueueStore) -> tuple[int, int]:
    """What the topic queues hold, measured from scratch: all of them, and those marked unsubscribed (memory)."""
    if isinstance(store, MemoryQueueStore):
        held = {name: sum(job.size for job in q.jobs.values()) + sum(letter.size for letter in q.dlq.values())
                for name, q in store._queues.items() if name.startswith(PREFIX)}
        unsubscribed = sum(held[name] for name, q in store._queues.items() if name in held and q.unsubscribed)
        return sum(held.values()), unsubscribed
    assert isinstance(store, RedisQueueStore)
    total = 0
    for name in TOPICS:
        keys = _Keys(store._prefix, name)
        for key in (keys.jobs, keys.dlq_entries):
            total += sum(len(raw) for raw in await store._redis.hvals(key))
    return total, 0


async def counted_topic_bytes(store: QueueStore) -> tuple[int, int]:
    if isinstance(store, MemoryQueueStore):
        return store.topic_bytes
    assert isinstance(store, RedisQueueStore)
    return await store.topic_bytes(), 0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QueueStore]:
    share = TopicShare(PREFIX, 10**9, 10**9)
    if request.param == "memory":
        yield MemoryQueueStore(topics=share)
        return
    url, prefix = require_redis(), f"topic-bytes-{random.getrandbits(32):08x}:"
    opened = RedisQueueStore(url, key_prefix=prefix, topics=share)
    try:
        yield opened
    finally:
        await opened.close()
        async with Redis.from_url(url) as admin:
            if keys := [key async for key in admin.scan_iter(match=f"{prefix}*")]:
                await admin.delete(*keys)


@pytest.mark.parametrize("seed", range(4))
async def test_the_topics_count_equals_what_they_hold_after_a_random_mix(store: QueueStore, seed: int) -> None:
    rng = random.Random(seed)
    claimed: list[tuple[str, Job]] = []
    for step in range(300):
        name = rng.choice(QUEUES)
        op = rng.randrange(9)
        if op <= 2:
            job = Job.new(name, None if name in TOPICS else "f", {"x": "é" * rng.randrange(200)},
                          rng.choice([None, "g"]))
            await store.push(name, job, unsubscribed=rng.choice([None, True, False]) if name in TOPICS else None)
        elif op == 3:
            if (got := await store.claim(name, now_ms=0, lease_ms=60_000)) is not None:
                claimed.append((name, got))
        elif op == 4 and claimed:
            await store.ack(*claimed.pop(rng.randrange(len(claimed))))
        elif op == 5 and claimed:
            name, job = claimed.pop(rng.randrange(len(claimed)))
            await store.retry(name, replace(job, attempts=job.attempts + 1, data="y" * rng.randrange(300)), due_ms=0)
        elif op == 6 and claimed:
            name, job = claimed.pop(rng.randrange(len(claimed)))
            await store.dead(name, DeadLetter(job, "ü" * rng.randrange(100), step))
        elif op == 7:
            letters = await store.dlq_page(name, 0, 100)
            try:
                if letters and rng.random() < 0.5:
                    await store.redrive(name, rng.choice(letters).job.id, max_jobs=rng.choice([None, 2]))
                else:
                    await store.redrive(name, None, max_jobs=rng.choice([None, 2]))
            except QueueFull:
                pass
        elif op == 8:
            if letters := await store.dlq_page(name, 0, 100):
                assert await store.discard(name, rng.choice(letters).job.id) == 1
            elif name in TOPICS:
                store.set_unsubscribed(name, rng.choice([True, False]))
        assert await counted_topic_bytes(store) == await real_topic_bytes(store), f"step {step}, op {op}"
    # everything finished or discarded: nothing counted
    for name in QUEUES:
        await store.recover(name, now_ms=2**62)
        while (left := await store.claim(name, now_ms=2**62, lease_ms=1)) is not None:
            await store.ack(name, left)
        for letter in await store.dlq_page(name, 0, 10_000):
            await store.discard(name, letter.job.id)
    assert await counted_topic_bytes(store) == (0, 0)


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_topic_push_past_the_topics_bytes_is_refused_and_a_named_queue_still_takes_jobs(kind: str) -> None:
    share = TopicShare(PREFIX, 4000)
    url, prefix = (require_redis(), f"topic-bytes-{random.getrandbits(32):08x}:") if kind == "redis" else ("", "")
    store: QueueStore = MemoryQueueStore(max_bytes=8000, topics=share) if kind == "memory" else \
        RedisQueueStore(url, key_prefix=prefix, topics=share)
    try:
        refused = None
        for n in range(20):
            try:
                await store.push(f"{PREFIX}junk{n}", Job.new(f"{PREFIX}junk{n}", None, "x" * 1000))
            except StoreFull as full:
                refused = full
                break
        assert refused is not None and refused.bound == "topics" and refused.limit == 4000
        assert refused.used + refused.size > 4000 >= refused.used
        assert str(refused).endswith(f"topics hold {refused.used} of their 4000 bytes")
        assert await store.push("__fn_queue::orders", Job.new("__fn_queue::orders", "f", "x" * 1000))
    finally:
        if isinstance(store, RedisQueueStore):
            await store.close()
            async with Redis.from_url(url) as admin:
                if keys := [key async for key in admin.scan_iter(match=f"{prefix}*")]:
                    await admin.delete(*keys)


async def test_the_unsubscribed_count_follows_the_marks_and_bounds_those_topics_only() -> None:
    store = MemoryQueueStore(topics=TopicShare(PREFIX, 100_000, 3500))  # two jobs of 1,599 bytes
    job = Job.new(f"{PREFIX}a", None, "x" * 1000)
    assert await store.push(f"{PREFIX}a", job, unsubscribed=True)
    size = store.topic_bytes[1]
    assert store.topic_bytes == (size, size)
    assert await store.push(f"{PREFIX}b", Job.new(f"{PREFIX}b", None, "x" * 1000), unsubscribed=True)
    with pytest.raises(StoreFull, match="topics without a subscriber hold") as refused:
        await store.push(f"{PREFIX}c", Job.new(f"{PREFIX}c", None, "x" * 1000), unsubscribed=True)
    assert refused.value.bound == "unsubscribed" and refused.value.limit == 3500
    # a topic with a subscriber is not under that bound; one gaining a subscriber leaves it, and one losing it joins
    assert await store.push(f"{PREFIX}c", Job.new(f"{PREFIX}c", None, "x" * 1000), unsubscribed=False)
    store.set_unsubscribed(f"{PREFIX}a", False)
    assert store.topic_bytes == (3 * size, size)
    assert await store.push(f"{PREFIX}d", Job.new(f"{PREFIX}d", None, "x" * 1000), unsubscribed=True)
    store.set_unsubscribed(f"{PREFIX}c", True)
    assert store.topic_bytes == (4 * size, 3 * size)
    assert TOPIC_BYTES_KEY == "queue-topic-bytes"
