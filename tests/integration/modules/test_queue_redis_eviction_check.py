"""The queue module with the Redis adapter warns at start when Redis may evict keys: an evicting
``maxmemory-policy`` deletes queued jobs without a word to anyone. Real ``redis-server`` processes of our own, so
the shared server's configuration is never touched."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.redis_store import RedisQueueStore
from tests.integration.streams.private_redis import PrivateRedis, _free_port

pytestmark = pytest.mark.our_engine("configures the queue module")

QUEUE = "modules::queue::QueueModule"


def _engine(url: str) -> Engine:
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": "evict-test:"}}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec(QUEUE, {"adapter": adapter, "queue_configs": {"jobs": {}}})]))


async def _started_and_checked(url: str) -> None:
    async with _engine(url) as engine:
        check = engine.modules["queue"]._eviction_check  # type: ignore[attr-defined]
        assert check is not None
        await check


async def test_an_evicting_policy_is_named_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        client = aioredis.Redis.from_url(server.url)
        try:
            await client.config_set("maxmemory-policy", "allkeys-lru")
            with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.module"):
                await _started_and_checked(server.url)
            warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
            assert len(warnings) == 1 and "'allkeys-lru'" in warnings[0] and "noeviction" in warnings[0]

            caplog.clear()
            await client.config_set("maxmemory-policy", "noeviction")
            with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.module"):
                await _started_and_checked(server.url)
            assert not [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
        finally:
            await client.aclose()


async def test_a_redis_that_is_down_does_not_hold_the_check() -> None:
    store = RedisQueueStore(f"redis://127.0.0.1:{_free_port()}/0")  # nothing listens there
    try:
        started = time.monotonic()
        assert await store.eviction_policy() is None
        assert time.monotonic() - started < 3.0
    finally:
        await store.close()


async def test_an_unconfirmed_push_names_its_job_and_says_it_may_run() -> None:
    # Before: "could not store the job: …", although a connection lost after the push was sent may have stored it,
    # and then it runs: a caller retrying on that word would run it twice, with no id to check.
    from module_worker import ModuleWorker

    async with _engine(f"redis://127.0.0.1:{_free_port()}/0") as engine, ModuleWorker(engine.url) as worker:
        reply = await worker.call("nobody::home", 1, action={"type": "enqueue", "queue": "jobs"})
    error = reply["error"]
    assert error["code"] == "enqueue_error"
    assert error["message"].startswith("Queue 'jobs': the store did not confirm job ")
    assert error["message"].endswith("(if it reached the store, it will run)")
    assert len(error["message"]) < 500
