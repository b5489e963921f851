"""A watch closed by one task while another waits on it ends that wait (StopAsyncIteration), on every store; a
watch that lagged says so on every later read.

Before: the waiting task stayed blocked for good (its subscription's queue was never woken), and on PostgreSQL a
watcher that was reconnecting when its watch was closed reconnected anyway once the server took connections
again: a LISTEN connection nobody would close, held for the store's life, and events delivered after aclose().
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from iii.stream import StreamSetInput
from iii_streams import MemoryStream, SQLStream, StreamLagError
from iii_streams.events import Watch
from tests.integration.streams.pg_database import admin
from tests.integration.streams.test_ast_pg_killed_connections import _terminate
from tests.polling import until
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", id="postgresql"), "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The four stores; PostgreSQL's test id is postgresql, as in ``test_a_watch_that_lagged_keeps_saying_so``."""
    return str(request.param)


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


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgresql"])
async def test_a_watch_that_lagged_keeps_saying_so(kind: str, pg_url: str) -> None:
    """Before: after its one StreamLagError a watch's next read waited for good, every later event dropped
    unseen, so a consumer that logged the error and read on was silently deaf."""
    if kind == "memory":
        store: Any = MemoryStream(watch_queue_size=3)
    else:
        store = SQLStream.from_url(pg_url if kind == "postgresql" else "sqlite+aiosqlite://", watch_queue_size=3)
    async with store, store.watch(stream_name="r3lag") as events:
        for n in range(6):
            await store.set(StreamSetInput(stream_name="r3lag", group_id="g", item_id=str(n), data=n))
        subscription: Any = events._sub
        await until(lambda: subscription._lagged if kind == "postgresql" else subscription.lagged)
        with pytest.raises(StreamLagError):
            async with asyncio.timeout(5):
                while True:
                    await anext(events)
        await store.set(StreamSetInput(stream_name="r3lag", group_id="g", item_id="later", data=7))
        for _ in range(2):
            with pytest.raises(StreamLagError):
                async with asyncio.timeout(5):
                    await anext(events)
