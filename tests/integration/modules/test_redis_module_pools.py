"""The engine modules on Redis (queue, pubsub, cron lock, state and stream stores) share one kind of client: a
blocking pool where callers beyond its connections wait for one, and a start that fails in one line when Redis does
not answer.

Before: the queue, pubsub and cron modules opened ``Redis.from_url`` clients, whose pool fails a caller beyond its
size at once ("Too many connections": 1,901 of 2,000 concurrent publishes and 1,898 of 2,000 enqueues failed, the
enqueues reported as maybe stored though they never reached Redis); and the state module on a Redis that was down
started, then failed every call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import module_worker
import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_engine_attack_pubsub import engine_on, listen

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.cron.locks import RedisCronLock
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_streams.errors import StreamUnavailableError
from tests.integration.engine.test_startup_trust import engine_cli, free_port, one_error_line
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30),
              pytest.mark.our_engine("configures the Redis adapters of the engine's modules")]

BURST = 2000  # twenty times redis-py's plain pool of 100
REDIS_ADAPTERS = {
    "modules::queue::QueueModule": "modules::queue::RedisAdapter",
    "modules::pubsub::PubSubModule": "modules::pubsub::RedisAdapter",
    "modules::cron::CronModule": "modules::cron::RedisCronAdapter",
}


@asynccontextmanager
async def engine_with(module: str, config: dict[str, Any]) -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(module, config)])) as engine:
        yield engine


async def burst(worker: ModuleWorker, function_id: str, data: Any, **extra: Any) -> list[dict[str, Any]]:
    """``BURST`` calls at once; the errors among their answers."""
    answers = await asyncio.gather(*(worker.call(function_id, data(i), **extra) for i in range(BURST)))
    return [answer["error"] for answer in answers if "error" in answer]


async def test_concurrent_publishes_beyond_the_pool_all_reach_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module_worker, "WAIT", 25.0)  # each call's wait; 2,000 take a few seconds on a busy box
    url, topic = require_redis(), f"pool-{uuid.uuid4()}"
    config = {"adapter": {"class": REDIS_ADAPTERS["modules::pubsub::PubSubModule"], "config": {"redis_url": url}}}
    async with engine_with("modules::pubsub::PubSubModule", config) as engine, ModuleWorker(engine.url) as worker:
        # before: 1,901 of 2,000 failed with "publish_failed: ... MaxConnectionsError: Too many connections"
        assert await burst(worker, "publish", lambda i: {"topic": topic, "data": i}) == []


async def test_concurrent_enqueues_beyond_the_pool_all_reach_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module_worker, "WAIT", 25.0)
    url, prefix = require_redis(), f"pool-{uuid.uuid4().hex[:8]}:"
    config = {"queue_configs": {"jobs": {}},
              "adapter": {"class": REDIS_ADAPTERS["modules::queue::QueueModule"],
                          "config": {"redis_url": url, "key_prefix": prefix}}}
    admin = Redis.from_url(url)
    try:
        async with engine_with("modules::queue::QueueModule", config) as engine, ModuleWorker(engine.url) as worker:
            await worker.function("pool::job", lambda data: asyncio.sleep(0))
            # before: 1,898 of 2,000 failed with "enqueue_error: ... Too many connections (if it reached the store,
            # it will run)", none of them stored
            assert await burst(worker, "pool::job", lambda i: {"i": i}, action={"type": "enqueue", "queue": "jobs"}) \
                == []
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def test_concurrent_cron_locks_beyond_the_pool_all_answer() -> None:
    lock = RedisCronLock(require_redis(), key_prefix=f"pool-{uuid.uuid4().hex[:8]}:")
    try:
        # before: MaxConnectionsError for all but about 100 of them
        won = await asyncio.gather(*(lock.try_fire(f"job-{i}", 1000) for i in range(BURST)))
        assert all(won)
    finally:
        await lock.close()


async def test_pubsub_with_a_pool_of_one_publishes_and_delivers() -> None:
    # before: the subscriber's connection held the pool's one connection for good, and every publish failed after
    # its 10 s ("no connection to Redis was ready (connecting, or waiting for a free one)")
    topic = f"pool-one-{uuid.uuid4()}"
    async with engine_on(require_redis() + "?max_connections=1") as engine, ModuleWorker(engine.url) as subscriber, \
            ModuleWorker(engine.url) as publisher:
        got = await listen(subscriber, "pool::on", "pool-one-sub", topic)
        answers = await asyncio.gather(*(publisher.call("publish", {"topic": topic, "data": i}) for i in range(50)))
        assert [answer for answer in answers if "error" in answer] == []
        assert sorted([await asyncio.wait_for(got.get(), 10) for _ in range(50)]) == list(range(50))


async def test_the_url_sizes_the_pool_and_its_wait() -> None:
    url = require_redis() + "?max_connections=3&timeout=2.5"
    queue, lock = RedisQueueStore(url), RedisCronLock(url)
    try:
        for client in (queue._redis, lock._redis):  # the pool is what is under test
            pool: Any = client.connection_pool
            assert (pool.max_connections, pool.timeout) == (3, 2.5)
    finally:
        await queue.close()
        await lock.close()


@pytest.mark.parametrize("module", ["modules::state::StateModule", "modules::stream::StreamModule",
                                    "modules::pubsub::PubSubModule", "modules::queue::QueueModule",
                                    "modules::cron::CronModule"])
def test_a_module_on_a_redis_that_is_down_stops_the_engine_in_one_line(module: str, tmp_path: Any) -> None:
    port = free_port()  # nothing listens there
    kind = module.split("::")[1]
    adapter = REDIS_ADAPTERS.get(module, f"modules::{kind}::adapters::RedisAdapter")
    config = tmp_path / "engine.yaml"
    config.write_text(f"port: 0\nmodules:\n  - class: {module}\n    config:\n      adapter:\n"
                      f"        class: {adapter}\n"
                      f"        config: {{redis_url: 'redis://:s3cret@127.0.0.1:{port}/0'}}\n")
    line = one_error_line(engine_cli("--config", str(config)), 1)
    # before (state, queue, cron): it started, listened, and every call (a tick) failed
    assert line.startswith(f"iii-engine: module {module} cannot start: Redis at redis://127.0.0.1:{port}/0 "
                           "unreachable: "), line
    assert "s3cret" not in line


async def test_the_queue_store_and_the_cron_lock_check_redis_answers() -> None:
    port = free_port()
    for down in (RedisQueueStore(f"redis://:s3cret@127.0.0.1:{port}/0"),
                 RedisCronLock(f"redis://:s3cret@127.0.0.1:{port}/0")):
        try:
            with pytest.raises(StreamUnavailableError, match=rf"^Redis at redis://127\.0\.0\.1:{port}/0 unreachable: "):
                await down.prepare()
        finally:
            await down.close()
    for up in (RedisQueueStore(require_redis()), RedisCronLock(require_redis())):
        try:
            await up.prepare()
        finally:
            await up.close()
