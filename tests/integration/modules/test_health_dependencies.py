"""``engine::health::check`` probes what each module depends on: its store, its Redis server, a Bridge's remote engine.

Before, the health check said ``healthy`` (and ``iii-engine health`` exited 0) while the Redis every module kept
its data on was down and every ``state::set`` failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from module_worker import ModuleWorker
from sqlalchemy.engine import make_url

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.health import PROBE_TIMEOUT_S
from tests.integration.streams.pg_database import admin, scratch_database
from tests.integration.streams.private_redis import PrivateRedis
from tests.services import require_postgres

OTEL = "modules::observability::OtelModule"
REDIS_PARTS = ("state", "stream", "queue", "pubsub", "cron")


def _redis_modules(url: str) -> list[ModuleSpec]:
    return [
        ModuleSpec("modules::state::StateModule",
                   {"adapter": {"class": "modules::state::adapters::RedisAdapter", "config": {"redis_url": url}}}),
        ModuleSpec("modules::stream::StreamModule",
                   {"port": 0, "adapter": {"class": "modules::stream::adapters::RedisAdapter",
                                           "config": {"redis_url": url}}}),
        ModuleSpec("modules::queue::QueueModule",
                   {"adapter": {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url}}}),
        ModuleSpec("modules::pubsub::PubSubModule",
                   {"adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": url}}}),
        ModuleSpec("modules::cron::CronModule",
                   {"adapter": {"class": "modules::cron::RedisCronAdapter", "config": {"redis_url": url}}}),
        ModuleSpec(OTEL, {}),
    ]


@asynccontextmanager
async def _engine(modules: list[ModuleSpec]) -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine:
        yield engine


def _statuses(health: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    return {name: health["components"][name]["status"] for name in names}


async def test_a_redis_that_is_down_or_hung_makes_the_engine_degraded_naming_each_part(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with _engine(_redis_modules(server.url)) as engine, ModuleWorker(engine.url) as worker:
            health = await worker.result("engine::health::check", {})
            assert health["status"] == "healthy"
            assert _statuses(health, REDIS_PARTS) == dict.fromkeys(REDIS_PARTS, "healthy")
            assert health["components"]["state"]["details"] == {"adapter": "RedisStream"}

            server.stop()
            health = await worker.result("engine::health::check", {})
            assert health["status"] == "degraded"
            assert _statuses(health, REDIS_PARTS) == dict.fromkeys(REDIS_PARTS, "unhealthy")
            assert "Redis unreachable" in health["components"]["state"]["details"]["error"]
            assert health["components"]["logs"]["status"] == "healthy"  # the rest is as before

            # a server that takes connections and never answers: the check still answers, within its bound
            await server.start()
            assert server._proc is not None
            os.kill(server._proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                health = await worker.result("engine::health::check", {})
                took = time.monotonic() - started
            finally:
                os.kill(server._proc.pid, signal.SIGCONT)
            assert health["status"] == "degraded"
            assert took < PROBE_TIMEOUT_S + 1.5, took
            error = health["components"]["state"]["details"]["error"]
            assert "no answer" in error or "Timeout" in error or "timed out" in error, error

            async def recovered() -> bool:
                return (await worker.result("engine::health::check", {}))["status"] == "healthy"

            deadline = time.monotonic() + 15
            while not await recovered():
                assert time.monotonic() < deadline, "not healthy again after Redis came back"
                await asyncio.sleep(0.2)  # Redis reconnects on its own schedule: nothing to await


async def test_a_bridge_whose_remote_is_down_is_unhealthy(tmp_path: Path) -> None:
    async with _engine([ModuleSpec("modules::state::StateModule", {}), ModuleSpec(OTEL, {})]) as back:
        url = back.url
        modules = [
            ModuleSpec("modules::state::StateModule",
                       {"adapter": {"class": "modules::state::adapters::Bridge", "config": {"bridge_url": url}}}),
            ModuleSpec("modules::bridge_client::BridgeClientModule", {"url": url}),
            ModuleSpec(OTEL, {}),
        ]
        async with _engine(modules) as front, ModuleWorker(front.url) as worker:
            async def status(name: str) -> str:
                health = await worker.result("engine::health::check", {})
                return str(health["components"][name]["status"])

            deadline = time.monotonic() + 10
            # each link (the bridge client's, the state store's) connects in the background
            while (health := await worker.result("engine::health::check", {}))["status"] != "healthy":
                assert time.monotonic() < deadline, health["components"]
                await asyncio.sleep(0.05)
            assert health["components"]["state"]["details"] == {"adapter": "BridgeStateStore"}
            await back.stop()
            deadline = time.monotonic() + 10
            while await status("bridge_client") != "unhealthy":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            health = await worker.result("engine::health::check", {})
            assert health["status"] == "degraded"
            assert "not connected to the remote engine" in health["components"]["bridge_client"]["details"]["error"]
            assert "not connected" in health["components"]["state"]["details"]["error"]


async def test_health_checks_at_once_share_one_probe(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        modules = [_redis_modules(server.url)[0], ModuleSpec(OTEL, {})]
        async with _engine(modules) as engine, ModuleWorker(engine.url) as worker:
            probes = 0
            state = engine.module("state")
            assert state is not None
            health = state.health

            async def counted() -> dict[str, dict[str, Any]]:
                nonlocal probes
                probes += 1
                return await health()

            state.health = counted  # type: ignore[method-assign]
            answers = await asyncio.gather(*(worker.result("engine::health::check", {}) for _ in range(50)))
            assert {a["status"] for a in answers} == {"healthy"}
            assert probes < 50, probes


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database(require_postgres()) as url:
        yield url


@pytest.mark.postgres
async def test_connections_the_server_ended_do_not_make_the_store_unhealthy(pg_url: str) -> None:
    """A pool gives out each connection the server ended once (a restart, an idle-session reaper): the probe reads
    again then, rather than say ``degraded`` for one dead connection (2 of 3 rounds in an attack)."""
    server, url = require_postgres(), pg_url
    modules = [ModuleSpec("modules::state::StateModule", {"store_url": url}), ModuleSpec(OTEL, {})]
    async with _engine(modules) as engine, ModuleWorker(engine.url) as worker:
        for _ in range(3):
            await worker.result("state::set", {"scope": "s", "key": "k", "value": 1})  # a pooled connection
            name = make_url(url).database
            await admin(server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            health = await worker.result("engine::health::check", {})
            assert health["components"]["state"]["status"] == "healthy", health["components"]["state"]
