"""Custom streams served through `create_stream` by a worker process (memory, SQLite, real Redis and real
PostgreSQL backends, and a plain dict stream under the reference SDK) and driven through the engine by a second
worker process, ours or the reference SDK's."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine
from tests.integration.streams.pg_database import scratch_database
from tests.services import reference_python, require_postgres, require_redis

from .helpers import registered

pytestmark = pytest.mark.our_engine("serves streams from iii_streams backends configured in our engine")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
INCREMENTS = 20  # drive_stream.py


def env_for(python: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OTEL_ENABLED"] = "false"
    if python == sys.executable:
        env["PYTHONPATH"] = str(ROOT)  # our SDK; the reference venv must not see our `iii`
    return env


@asynccontextmanager
async def serving(python: str, url: str, name: str, store: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        python, str(HERE / "serve_stream.py"), url, name, store, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env_for(python), cwd=str(HERE))
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if line.strip() != b"ready":
            err = await proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"stream server did not start: {line!r} {err.decode()[-2000:]}")
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def drive(python: str, url: str, name: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        python, str(HERE / "drive_stream.py"), url, name, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env_for(python), cwd=str(HERE))
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


VALUE = {"n": 1, "tags": ["x", []], "big": 2**70, "ü": "✓", "z": None}


def check(results: dict[str, Any]) -> None:
    assert results["set"] == {"old_value": None, "new_value": VALUE}
    assert results["set_again"] == {"old_value": VALUE, "new_value": VALUE}
    assert results["get"] == VALUE
    assert list(results["get"]) == list(VALUE)  # key order survives
    assert results["ctr"] == {"n": INCREMENTS}  # no lost increment across concurrent updates
    assert sorted(results["list"], key=json.dumps) == sorted([VALUE, {"n": INCREMENTS}], key=json.dumps)
    assert results["groups"] == ["g"]
    assert results["delete"] == {"old_value": VALUE}
    assert results["delete_missing"] == {"old_value": None}
    assert results["after"] is None


async def run_case(engine: Engine, server_python: str, driver_python: str, store: str, name: str) -> None:
    async with serving(server_python, engine.url, name, store):
        await registered(engine, f"stream::list_groups({name})")
        if server_python == sys.executable:
            await registered(engine, f"stream::update({name})")
        check(await drive(driver_python, engine.url, name))
        # nothing leaked into the engine's own store (no shadow copy,
        # docs/protocol.md#production-behaviour-our-sdk-copes-with T30)
        assert engine.module("stream").store is not None  # type: ignore[union-attr]
        assert await engine.module("stream").store.list_all() == []  # type: ignore[union-attr]


@pytest.mark.parametrize("driver", ["ours", "reference"])
async def test_memory_backend(engine: Engine, driver: str) -> None:
    python = sys.executable if driver == "ours" else reference_python()
    await run_case(engine, sys.executable, python, "memory://", f"mem-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("driver", ["ours", "reference"])
async def test_sqlite_backend(engine: Engine, driver: str, tmp_path: Path) -> None:
    python = sys.executable if driver == "ours" else reference_python()
    url = f"sqlite+aiosqlite:///{tmp_path / 'custom.db'}"
    await run_case(engine, sys.executable, python, url, "sql'; DROP TABLE x; --")


@pytest.mark.redis
@pytest.mark.parametrize("driver", ["ours", "reference"])
async def test_redis_backend(engine: Engine, driver: str) -> None:
    redis_url = require_redis()
    python = sys.executable if driver == "ours" else reference_python()
    name = f"iii-test-{uuid.uuid4().hex}"  # unique prefix: every key is stream:<name>:*
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        await run_case(engine, sys.executable, python, redis_url, name)
        assert await client.hkeys(f"stream:{name}:g") == [b"ctr"]  # production layout, written by the worker
    finally:
        keys = [key async for key in client.scan_iter(match=f"stream:{name}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A migrated scratch database shared by this module's PostgreSQL cases, dropped at the end."""
    with scratch_database(require_postgres()) as url:
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["ours", "reference"])
async def test_postgres_backend(engine: Engine, driver: str, pg_url: str) -> None:
    python = sys.executable if driver == "ours" else reference_python()
    name = f"pg'; DROP TABLE iii_stream_items; -- {uuid.uuid4().hex[:8]}"  # stored literally, never as SQL
    await run_case(engine, sys.executable, python, pg_url, name)
    from iii_streams import SQLStream

    async with SQLStream.from_url(pg_url) as store:  # the worker's writes really are in PostgreSQL
        assert (name, ["g"]) in await store.list_all()


async def test_reference_sdk_stream_without_update_is_composed(engine: Engine) -> None:
    ref = reference_python()
    name = f"ref-{uuid.uuid4().hex[:8]}"
    # the reference create_stream registers no stream::update(NAME): the engine composes it (ST1)
    async with serving(ref, engine.url, name, "dict"):
        await registered(engine, f"stream::list_groups({name})")
        assert not engine.has_function(f"stream::update({name})")
        check(await drive(sys.executable, engine.url, name))
        assert await engine.module("stream").store.list_all() == []  # type: ignore[union-attr]
