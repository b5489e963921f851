"""A named-queue job whose function was missing runs as soon as a worker registers the function, not at the next
look the missing-function wait had planned (up to 5 s later, or ``backoff_ms`` when longer). A real engine, a real
worker registering late, the in-memory store and a real Redis.

Before: the job waited in the store until that look: registered 0.1 s after the job was put off with
``backoff_ms`` 5000, it ran about 5 s later.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("configures named queues")]

QUEUE = "modules::queue::QueueModule"
LOOK_MS = 5000  # the first look at a job whose function is missing comes after backoff_ms
PROMPT_S = 2.0


async def _delayed(worker: ModuleWorker, queue: str) -> None:
    """Return once the queue's job has been put off (its function missing): no event tells it."""
    while (await worker.result("engine::queue::topic_stats", {"topic": queue}))["delayed"] != 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def _runs_promptly_once_registered(settings: dict[str, Any]) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, settings)])
    function_id = f"late::{uuid.uuid4().hex[:8]}"
    async with Engine(config=config) as engine, ModuleWorker(engine.url) as producer:
        reply = await producer.call(function_id, {"n": 1}, action={"type": "enqueue", "queue": "q"})
        assert "error" not in reply, reply
        await asyncio.wait_for(_delayed(producer, "q"), 10)
        ran = asyncio.Event()

        async def handler(data: Any) -> None:
            assert data == {"n": 1}
            ran.set()

        async with ModuleWorker(engine.url) as worker:
            loop = asyncio.get_running_loop()
            registered = loop.time()
            await worker.function(function_id, handler)
            await asyncio.wait_for(ran.wait(), 10)
            took = loop.time() - registered
        assert took < PROMPT_S, f"the job ran {took:.2f} s after its function was registered"


async def test_a_job_runs_promptly_once_its_function_registers() -> None:
    await _runs_promptly_once_registered({"queue_configs": {"q": {"backoff_ms": LOOK_MS}}})


@pytest.mark.redis
async def test_a_job_runs_promptly_once_its_function_registers_on_redis() -> None:
    url, prefix = require_redis(), f"late-{uuid.uuid4().hex[:8]}:"
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": prefix}}
    try:
        await _runs_promptly_once_registered({"queue_configs": {"q": {"backoff_ms": LOOK_MS}}, "adapter": adapter})
    finally:
        admin = Redis.from_url(url)
        try:
            keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
            if keys:
                await admin.delete(*keys)
        finally:
            await admin.aclose()
