"""Attack A-Q on the queue module's arguments: a dead-letter page past Redis's 64-bit indexes failed with Redis's
own error instead of naming the argument, and an unknown queue's name came back whole in the error (4 MiB for a
4 MiB name)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.services import require_redis

pytestmark = pytest.mark.our_engine("configures named queues on Redis")


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    url, prefix = require_redis(), f"aq-{uuid.uuid4().hex[:12]}:"
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": prefix}}
    settings = {"queue_configs": {"q": {}}, "adapter": adapter}
    try:
        async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
                ModuleSpec("modules::queue::QueueModule", settings)])) as running:
            yield running
    finally:
        client = aioredis.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("key", ["offset", "limit"])
async def test_a_dead_letter_page_past_64_bit_names_the_argument(engine: Engine, key: str) -> None:
    async with ModuleWorker(engine.url) as worker:
        reply = await worker.call("engine::queue::dlq_messages", {"topic": "q", key: 10**30})
        assert reply["error"] == {"code": "deserialization_error",
                                  "message": f"Failed to deserialize input for engine::queue::dlq_messages: bad {key}"}
        page = await worker.result("engine::queue::dlq_messages", {"topic": "q", "offset": 2**53 - 1})
        assert page["messages"] == []


@pytest.mark.redis
async def test_an_unknown_queue_with_a_huge_name_is_named_briefly(engine: Engine) -> None:
    async with ModuleWorker(engine.url) as worker:
        name = "n" * 100_000
        reply = await worker.call("work", {}, action={"type": "enqueue", "queue": name})
        assert reply["error"]["code"] == "enqueue_error"
        assert reply["error"]["message"].startswith("Queue 'nnn") and len(reply["error"]["message"]) < 300
        assert "100002 chars" in reply["error"]["message"]
        stats = await worker.call("engine::queue::topic_stats", {"topic": name})
        assert stats["error"]["code"] == "queue_not_found" and len(stats["error"]["message"]) < 300
        short = await worker.call("work", {}, action={"type": "enqueue", "queue": "nope"})
        assert short["error"]["message"] == "Queue 'nope' not found"
