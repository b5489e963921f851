"""The queue module with the Redis adapter warns at start, in one line, when Redis keeps nothing on disk
(``appendonly no`` and ``save ''``): a restart of Redis then loses every acknowledged job without a word; or keeps
them in snapshots only (``appendonly no`` with ``save`` rules): a crash or kill of Redis loses those since the last
snapshot. Throwaway ``redis-server`` processes of our own; the machine's Redis is only read.

Before: no line; a Redis restart silently lost every queued job; and with snapshots only, no line either (50 jobs
accepted, Redis killed and restarted: 49 never ran).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.redis_store import RedisQueueStore
from tests.integration.streams.private_redis import PrivateRedis
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("configures the queue module")]

QUEUE = "modules::queue::QueueModule"
LOGGER = "iii_engine.modules.queue.module"


async def _warnings(url: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": "disk-test:"}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec(QUEUE, {"adapter": adapter, "queue_configs": {"jobs": {}}})])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        async with Engine(config=config) as engine:
            check = engine.modules["queue"]._eviction_check  # type: ignore[attr-defined]
            assert check is not None
            await check
    return [r.getMessage() for r in caplog.records if "appendonly no" in r.getMessage()]


@pytest.mark.parametrize(("options", "warned"), [
    (["--appendonly", "no"], "keeps nothing on disk (appendonly no, save '')"),  # and --save '' (PrivateRedis's own)
    (["--appendonly", "no", "--save", "3600 1 300 100"],
     "only in its snapshots (appendonly no, save '3600 1 300 100')"),
    ([], None),  # PrivateRedis's appendonly yes
])
async def test_a_redis_that_would_lose_jobs_is_named_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, options: list[str], warned: str | None) -> None:
    with PrivateRedis(tmp_path) as server:
        server._cmd += options
        await server.start()
        lines = await _warnings(server.url, caplog)
    assert len(lines) == (warned is not None)
    if warned:
        assert warned in lines[0] and "silently" in lines[0] and "appendonly yes" in lines[0], lines[0]


async def test_a_refused_config_is_no_loss_to_name(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        server._cmd += ["--appendonly", "no", "--rename-command", "CONFIG", ""]  # a managed Redis: no word
        await server.start()
        store = RedisQueueStore(server.url)
        try:
            assert await store.persistence_gap() is None
        finally:
            await store.close()


async def test_the_machines_redis_is_judged_by_its_own_settings(caplog: pytest.LogCaptureFixture) -> None:
    url = require_redis()
    async with Redis.from_url(url, decode_responses=True) as client:  # read only: CONFIG GET
        settings = {**await client.config_get("appendonly"), **await client.config_get("save")}
    assert len(await _warnings(url, caplog)) == (settings["appendonly"] == "no")
