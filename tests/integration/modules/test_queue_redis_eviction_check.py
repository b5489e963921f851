"""The queue module with the Redis adapter warns at start when Redis may evict keys: an evicting
``maxmemory-policy`` deletes queued jobs without a word to anyone. Real ``redis-server`` processes of our own, so
the shared server's configuration is never touched."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.redis_store import RedisQueueStore
from tests.integration.streams.private_redis import PrivateRedis

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
    # a port held bound and never listened on: it refuses connections, and no other process can take it meanwhile
    # (a port found free and closed could be another test process's Redis, or anything, by the time it is dialled)
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        store = RedisQueueStore(f"redis://127.0.0.1:{refusing.getsockname()[1]}/0")
        try:
            started = time.monotonic()
            assert await store.eviction_policy() is None
            assert time.monotonic() - started < 3.0
        finally:
            await store.close()


async def test_a_push_to_a_redis_gone_before_it_names_its_job_as_not_enqueued(tmp_path: Path) -> None:
    # Before: "could not store the job: …" with no id; then "the store did not confirm job …" with the hedge "(if it
    # reached the store, it will run)", although the pool found its connection closed and could not open another
    # before anything was written. (A push cut off after it was sent keeps the hedge:
    # tests/unit/modules/test_queue_refused_enqueue.py.)
    from module_worker import ModuleWorker

    with PrivateRedis(tmp_path) as server:
        await server.start()  # up for the module's start (which checks it answers), gone before the push
        async with _engine(server.url) as engine, ModuleWorker(engine.url) as worker:
            server.kill()
            reply = await worker.call("nobody::home", 1, action={"type": "enqueue", "queue": "jobs"})
    error = reply["error"]
    assert error["code"] == "enqueue_error"
    assert error["message"].startswith("Queue 'jobs': the job was not enqueued (it never reached the store): "), \
        error["message"]
    assert len(error["message"]) < 500
