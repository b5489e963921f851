"""Issue #8: the Redis queue store's keys of two queues never meet, whatever the queue names and message groups."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import Job
from tests.services import require_redis

pytestmark = pytest.mark.redis


async def test_queue_names_with_colons_do_not_share_keys() -> None:
    url = require_redis()
    prefix = f"trust{uuid.uuid4().hex[:10]}:"
    store = RedisQueueStore(url, key_prefix=prefix)
    try:
        # queue "t" with message group "jobs" has the lane list "…queue:t:lane:g:jobs", which is exactly the jobs
        # hash of a queue named "t:lane:g" when queue names are joined unescaped
        grouped = Job.new("t", "fn", {"to": "t"}, group="jobs")
        plain = Job.new("t:lane:g", "fn", {"to": "t:lane:g"})
        await store.push("t", grouped)
        await store.push("t:lane:g", plain)
        first = await store.claim("t:lane:g", now_ms=1, lease_ms=60_000)
        second = await store.claim("t", now_ms=1, lease_ms=60_000)
        assert first is not None and first.data == {"to": "t:lane:g"}
        assert second is not None and second.data == {"to": "t"}
        assert await store.counts("t") == await store.counts("t:lane:g")  # one active job each
    finally:
        await store.close()
        raw = aioredis.Redis.from_url(url)
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()
