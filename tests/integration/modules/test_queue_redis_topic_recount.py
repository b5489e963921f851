"""Attack of 11a320f (q2_counter_orphan.py): the Redis count of the topics' bytes (``<key_prefix>queue-topic-bytes``)
outlived what it counted and nothing counted it again. The README's remedy for made-up topics' jobs (delete their
keys) left it at 62,775 of a 65,536 bound, and every topic enqueue to the empty store was refused for good; a
deleted (or evicted) counter undercounted for good. It is now counted again from the topic queues when the store is
prepared and before an enqueue is refused for it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from iii_engine.modules.queue.module import TOPIC_PREFIX
from iii_engine.modules.queue.redis_store import RECOUNT_EVERY_S, TOPIC_BYTES_KEY, RedisQueueStore
from iii_engine.modules.queue.store import Job, StoreFull, TopicShare
from tests.services import require_redis

pytestmark = pytest.mark.redis

BOUND = 64 * 1024
DATA = "x" * 4000


@pytest.fixture
async def url_prefix() -> AsyncIterator[tuple[str, str]]:
    url, prefix = require_redis(), f"topic-recount-{random.getrandbits(32):08x}:"
    try:
        yield url, prefix
    finally:
        async with Redis.from_url(url) as admin:
            if keys := [key async for key in admin.scan_iter(match=f"{prefix}*")]:
                await admin.delete(*keys)


def _store(url: str, prefix: str) -> RedisQueueStore:
    return RedisQueueStore(url, key_prefix=prefix, topics=TopicShare(TOPIC_PREFIX, BOUND))


async def _push(store: RedisQueueStore, topic: str) -> None:
    await store.push(TOPIC_PREFIX + topic, Job.new(TOPIC_PREFIX + topic, None, DATA))


async def test_deleting_the_topic_keys_by_hand_frees_their_bytes(url_prefix: tuple[str, str]) -> None:
    url, prefix = url_prefix
    store = _store(url, prefix)
    try:
        await store.prepare()
        taken = 0
        with pytest.raises(StoreFull):
            while taken < 100:
                await _push(store, f"junk{taken % 5}")
                taken += 1
        assert taken == 15
        full = await store.topic_bytes()
        assert BOUND - len(DATA) < full <= BOUND
        async with Redis.from_url(url) as admin:  # the README's remedy: delete the made-up topics' keys
            keys = [key async for key in admin.scan_iter(match=f"{prefix}queue:{TOPIC_PREFIX[:2]}*")]
            assert keys
            await admin.delete(*keys)
        assert await store.topic_bytes() == full  # the counter is not among them
        with pytest.raises(StoreFull):  # the flood's refusal counted again just now: not again within 5 s
            await _push(store, "orders")
        store._recount_after -= RECOUNT_EVERY_S  # RECOUNT_EVERY_S later
        # before: StoreFull "topics hold 62775 of their 65536 bytes", for good
        await _push(store, "orders")
        assert await store.topic_bytes() == len(Job.new(TOPIC_PREFIX + "orders", None, DATA).to_json())
    finally:
        await store.close()


async def test_a_refusal_counts_again_at_most_every_few_seconds(url_prefix: tuple[str, str]) -> None:
    url, prefix = url_prefix
    store = _store(url, prefix)
    try:
        await store.prepare()
        async with Redis.from_url(url) as admin:
            await admin.set(prefix + TOPIC_BYTES_KEY, BOUND)  # too high: the first refusal counts again
            await _push(store, "a")
            one = await store.topic_bytes()
            assert 0 < one < len(DATA) + 1000
            await admin.set(prefix + TOPIC_BYTES_KEY, BOUND)  # too high again: within RECOUNT_EVERY_S, refused
            with pytest.raises(StoreFull):
                await _push(store, "a")
            assert int(await admin.get(prefix + TOPIC_BYTES_KEY)) == BOUND
    finally:
        await store.close()


async def test_a_deleted_counter_is_counted_again_when_a_store_is_prepared(url_prefix: tuple[str, str]) -> None:
    url, prefix = url_prefix
    store = _store(url, prefix)
    try:
        await store.prepare()
        for n in range(6):
            await _push(store, f"t{n % 3}")
        claimed = await store.claim(TOPIC_PREFIX + "t0", now_ms=0, lease_ms=60_000)
        assert claimed is not None
        await store.ack(TOPIC_PREFIX + "t0", claimed)
        held = await store.topic_bytes()
        assert held > 4 * len(DATA)
        async with Redis.from_url(url) as admin:
            await admin.delete(prefix + TOPIC_BYTES_KEY)  # evicted, or deleted by hand
    finally:
        await store.close()
    again = _store(url, prefix)
    try:
        assert await again.topic_bytes() == 0
        await again.prepare()  # the module's start
        assert await again.topic_bytes() == held  # before: 0, and 0 again after the jobs' acks
    finally:
        await again.close()
