"""Queue stores for tests that hold of both: the in-memory store, or a Redis store under a key prefix of its own
whose keys are deleted afterwards; and an embedded engine running the queue module alone (:func:`queue_engine`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import Job, MemoryQueueStore, QueueStore
from tests.services import require_redis

BOTH = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
"""The ``params`` of a fixture giving each store in turn (:func:`queue_store`'s ``kind``)."""


@asynccontextmanager
async def queue_store(kind: str, label: str) -> AsyncIterator[QueueStore]:
    """A :class:`MemoryQueueStore` (``kind`` "memory"), or a :class:`RedisQueueStore` on the test Redis under the
    prefix ``<label>-<random>:``, closed and its keys deleted on the way out."""
    if kind == "memory":
        yield MemoryQueueStore()
        return
    url, prefix = require_redis(), f"{label}-{uuid.uuid4().hex[:8]}:"
    redis_store = RedisQueueStore(url, key_prefix=prefix)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        async with Redis.from_url(url) as admin:
            if keys := [key async for key in admin.scan_iter(match=f"{prefix}*")]:
                await admin.delete(*keys)


async def push_job(store: QueueStore, function_id: str, data: object, group: str | None = None) -> Job:
    """A new job of ``function_id`` pushed to queue "q" (its push must store it)."""
    job = Job.new("q", function_id, data, group)
    assert await store.push("q", job)
    return job


@asynccontextmanager
async def queue_engine(**settings: Any) -> AsyncIterator[tuple[Engine, QueueModule]]:
    """An engine on a free port running the queue module alone, with ``settings``, and that module."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", settings)])
    async with Engine(config=config) as running:
        module = running.module("queue")
        assert isinstance(module, QueueModule)
        yield running, module
