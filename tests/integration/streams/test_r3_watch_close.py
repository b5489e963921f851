"""A watch closed by one task while another waits on it ends that wait (StopAsyncIteration), on every store.

Before: the waiting task stayed blocked for good (its subscription's queue was never woken), and on PostgreSQL a
watcher that was reconnecting when its watch was closed reconnected anyway once the server took connections
again: a LISTEN connection nobody would close, held for the store's life, and events delivered after aclose().
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from iii_streams import MemoryStream, RedisStream, SQLStream
from iii_streams.events import Watch
from iii_streams.redis import KeyLayout
from tests.integration.streams.pg_database import admin, scratch_database
from tests.integration.streams.test_ast_pg_killed_connections import _terminate
from tests.polling import until
from tests.services import require_postgres, require_redis

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with scratch_database(require_postgres()) as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
async def store(request: pytest.FixtureRequest, pg_url: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        backend: Any = MemoryStream()
    elif request.param == "sqlite":
        backend = SQLStream.from_url("sqlite+aiosqlite://")
    elif request.param == "postgresql":
        backend = SQLStream.from_url(pg_url)
    else:
        backend = RedisStream.from_url(require_redis(), layout=KeyLayout(f"r3watch{uuid.uuid4().hex[:10]}"),
                                       channel=f"r3watch{uuid.uuid4().hex[:10]}")
    async with backend:
        yield backend


async def _waiting(watch: Watch) -> asyncio.Task[Any]:
    """A task waiting for the watch's next event, once it waits."""
    await watch.open()
    task = asyncio.ensure_future(anext(watch))
    for _ in range(5):  # a few loop turns: into the subscription's wait
        await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_closing_a_watch_ends_the_wait_of_its_reader(store: Any) -> None:
    watch = store.watch(stream_name="r3")
    reader = await _waiting(watch)
    await watch.aclose()
    done, _ = await asyncio.wait({reader}, timeout=5)
    assert reader in done, "the reader still waits on a closed watch"
    assert isinstance(reader.exception(), StopAsyncIteration)


async def _listening(pg_url: str) -> int:
    conn = await asyncpg.connect(require_postgres())
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE "
                                       "'LISTEN%'", make_url(pg_url).database))
    finally:
        await conn.close()


async def test_a_postgresql_watch_closed_while_reconnecting_does_not_reconnect(pg_url: str) -> None:
    database = make_url(pg_url).database
    async with SQLStream.from_url(pg_url) as store:
        watch = store.watch(stream_name="r3")
        reader = await _waiting(watch)
        assert await _listening(pg_url) == 1
        await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            assert await _terminate(pg_url, "LISTEN%") == 1
            await until(lambda: watch._sub is not None and watch._sub._driver is None)  # type: ignore[attr-defined]  # reconnecting
            await watch.aclose()
        finally:
            await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        done, _ = await asyncio.wait({reader}, timeout=5)
        assert reader in done, "the reader of a closed watch still retries"
        assert isinstance(reader.exception(), StopAsyncIteration)
        assert await _listening(pg_url) == 0
