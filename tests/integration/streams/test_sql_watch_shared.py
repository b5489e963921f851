"""SQLStream.watch() on PostgreSQL shares one LISTEN connection per store, made outside the store's pool.

Before: each watcher checked a connection out of the store's pool and held it for its whole life. With
``pool_size=1`` one open watch made every write wait out ``pool_timeout`` and fail with PoolExhaustedError; N
watchers held N connections (100 watchers: more than a default server's ``max_connections``), and a closed watcher's
connection went back to the pool still LISTENing. Now: one connection listens for all the store's watchers (made with
the engine's own URL and connect arguments, never taking a pool slot), each watcher keeps its own bounded queue, and
the connection closes with the last watcher and with the store.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from iii.stream import StreamSetInput
from iii_streams import SQLStream, StreamLagError, StreamUnavailableError
from iii_streams.events import Watch
from tests.integration.streams.pg_database import admin
from tests.polling import until
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> str:
    """A unique application_name: the store's connections are the server's backends that carry it."""
    return f"pgw{uuid.uuid4().hex[:12]}"


def _store(pg_url: str, app: str, **options: Any) -> SQLStream:
    """A store on an engine the caller built (as a user may), its connections named ``app``."""
    engine = create_async_engine(pg_url, connect_args={"server_settings": {"application_name": app}}, **options)
    return SQLStream(engine, owns_engine=True)


async def _backends(app: str, listening: bool = False) -> int:
    """How many backends carry ``app`` (only those whose last statement was LISTEN when ``listening``)."""
    conn = await asyncpg.connect(require_postgres())
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE $2",
            app, "LISTEN%" if listening else "%"))
    finally:
        await conn.close()


async def _terminate_listen(app: str) -> int:
    conn = await asyncpg.connect(require_postgres())
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 "
            "AND query LIKE 'LISTEN%'", app))
    finally:
        await conn.close()


@pytest.fixture
async def watches() -> AsyncIterator[list[Watch]]:
    """Watches a test opens, closed at its end whatever happened."""
    opened: list[Watch] = []
    yield opened
    for watch in opened:
        await watch.aclose()


def _set(n: Any, stream: str = "shared", item: str = "i") -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=n)


async def _next_data(watch: Watch) -> Any:
    async with asyncio.timeout(10):
        return (await anext(watch))["event"]["data"]


async def test_writes_succeed_with_a_watch_open_on_a_pool_of_one(pg_url: str, app: str,
                                                                  watches: list[Watch]) -> None:
    """Before: the watch held the pool's only connection, and the write failed with PoolExhaustedError after
    pool_timeout."""
    async with _store(pg_url, app, pool_size=1, max_overflow=0, pool_timeout=1) as store:
        watch = store.watch(stream_name="pool1")
        watches.append(watch)
        await watch.open()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(3):
            await store.set(_set(n, "pool1"))
        assert loop.time() - started < 1  # never waited for a pool slot
        assert [await _next_data(watch) for _ in range(3)] == [0, 1, 2]


async def test_many_watchers_share_one_listen_connection(pg_url: str, app: str, watches: list[Watch]) -> None:
    """Before: 20 watchers held 20 LISTEN connections, all checked out of the store's pool. The one connection
    carries the engine's connect arguments (its application_name): it is made as the engine makes its own."""
    async with _store(pg_url, app, pool_size=20, max_overflow=0) as store:
        for _ in range(20):
            watch = store.watch(stream_name="many")
            watches.append(watch)
            await watch.open()
        pool: Any = store.engine.sync_engine.pool
        assert pool.checkedout() == 0  # no watcher holds a connection of the store's pool
        assert await _backends(app, listening=True) == 1
        assert await _backends(app) == 1  # nothing else: the pool made no connection for the watches
        await store.set(_set(1, "many"))
        assert [await _next_data(watch) for watch in watches] == [1] * 20


async def test_a_slow_watcher_lags_alone(pg_url: str, app: str, watches: list[Watch]) -> None:
    """A watcher that does not read is more than watch_queue_size behind: it gets StreamLagError; the others see
    every event, in order, before it has read anything."""
    engine = create_async_engine(pg_url, connect_args={"server_settings": {"application_name": app}})
    async with SQLStream(engine, owns_engine=True, watch_queue_size=3) as store:
        slow, fast = store.watch(stream_name="lag"), store.watch(stream_name="lag")
        watches.extend([slow, fast])
        await slow.open()
        await fast.open()
        seen = []
        for n in range(8):
            await store.set(_set(n, "lag", str(n)))
            seen.append(await _next_data(fast))
        assert seen == list(range(8))
        with pytest.raises(StreamLagError, match="more than 3 events behind"):
            async with asyncio.timeout(5):
                while True:
                    await anext(slow)
        await store.set(_set(8, "lag", "8"))
        assert await _next_data(fast) == 8  # the lag of one stops nothing for the other


async def test_all_watchers_resume_after_the_server_ended_the_listen_connection(
        pg_url: str, app: str, watches: list[Watch], caplog: pytest.LogCaptureFixture) -> None:
    async with _store(pg_url, app) as store:
        for _ in range(3):
            watch = store.watch(stream_name="killed")
            watches.append(watch)
            await watch.open()
        sub: Any = watches[0]._sub
        ended = sub._driver
        waiting = [asyncio.ensure_future(anext(watch)) for watch in watches]
        with caplog.at_level(logging.WARNING, logger="iii_streams.sql"):
            assert await _terminate_listen(app) == 1  # the one connection of all three
            await until(lambda: sub._driver not in (None, ended))  # listening again: no write from here is missed
            await store.set(_set(5, "killed"))
            async with asyncio.timeout(10):
                events = await asyncio.gather(*waiting)
        assert [e["event"]["data"] for e in events] == [5, 5, 5]
        assert await _backends(app, listening=True) == 1
        replaced = [r.getMessage() for r in caplog.records if "replaced" in r.getMessage()]
        assert len(replaced) == 1 and "notifications sent meanwhile were lost" in replaced[0], replaced


async def test_failed_reconnects_are_one_connection_s_attempts_logged_rate_limited(
        pg_url: str, app: str, watches: list[Watch], caplog: pytest.LogCaptureFixture) -> None:
    """10 watchers, the database refusing connections: one connection is retried (not ten), and its failed
    attempts are logged with a count, not one warning each."""
    database = make_url(pg_url).database
    async with _store(pg_url, app) as store:
        attempts = 0

        @event.listens_for(store.engine.sync_engine, "do_connect")
        def _count(*_args: Any) -> None:
            nonlocal attempts
            attempts += 1

        for _ in range(10):
            watch = store.watch(stream_name="retry")
            watches.append(watch)
            await watch.open()
        await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            with caplog.at_level(logging.WARNING, logger="iii_streams.sql"):
                assert await _terminate_listen(app) == 1
                start = attempts
                await until(lambda: attempts - start >= 4)
                retries = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        finally:
            await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        assert len(retries) == 1 and "attempt(s) to reconnect the LISTEN connection failed" in retries[0], retries
        sub: Any = watches[0]._sub
        await until(lambda: sub._driver is not None)  # back once the database takes connections again
        await store.set(_set(1, "retry"))
        assert [await _next_data(watch) for watch in watches] == [1] * 10


async def test_the_listen_connection_closes_with_the_last_watcher(pg_url: str, app: str) -> None:
    """Before: each closed watcher's connection went back to the pool, which then kept one idle connection per
    watcher that had been open at once."""
    async with _store(pg_url, app) as store:
        await store.set(_set(0, "last"))
        pooled = await _backends(app)  # the pool's own connection
        first, second = store.watch(stream_name="last"), store.watch(stream_name="last")
        await first.open()
        await second.open()
        await first.aclose()
        assert await _backends(app, listening=True) == 1  # the other watcher still listens
        await store.set(_set(1, "last"))
        assert await _next_data(second) == 1
        await second.aclose()
        await until_backends(app, listening=0)
        assert await _backends(app) == pooled  # nothing left behind by the watches
        # a later watch connects again
        async with store.watch(stream_name="last") as again:
            await store.set(_set(2, "last"))
            assert await _next_data(again) == 2
        await until_backends(app, listening=0)


async def until_backends(app: str, listening: int) -> None:
    """Wait for the server to count ``listening`` LISTEN backends of ``app`` (a backend leaves its table a moment
    after its connection closed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (count := await _backends(app, listening=True)) != listening:
        assert loop.time() < deadline, f"{count} LISTEN connections, not {listening}"
        await asyncio.sleep(0.02)


async def test_closing_the_store_closes_the_listen_connection_and_ends_its_watchers(pg_url: str, app: str) -> None:
    store = _store(pg_url, app)
    watch = store.watch(stream_name="store-close")
    await watch.open()
    reader = asyncio.ensure_future(anext(watch))
    await store.aclose()
    async with asyncio.timeout(5):
        with pytest.raises(StopAsyncIteration):
            await reader
    await until_backends(app, listening=0)
    assert await _backends(app) == 0
    with pytest.raises(Exception, match="closed"):
        await store.watch(stream_name="store-close").open()
    await watch.aclose()


async def test_a_watch_cancelled_while_connecting_leaves_no_connection(pg_url: str, app: str) -> None:
    async with _store(pg_url, app) as store:
        for turns in (0, 1, 5, 20, 50):
            watch = store.watch(stream_name="cancel")
            opening = asyncio.ensure_future(watch.open())
            for _ in range(turns):
                await asyncio.sleep(0)
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            await watch.aclose()  # in case it opened before the cancel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (count := await _backends(app)) != 0:
            assert loop.time() < deadline, f"{count} connections left by cancelled watches"
            await asyncio.sleep(0.02)
        async with store.watch(stream_name="cancel") as events:  # the store still watches
            await store.set(_set(1, "cancel"))
            assert await _next_data(events) == 1


async def test_the_listen_connection_is_made_as_the_engine_makes_its_own(pg_url: str, app: str) -> None:
    """An engine of the user's own, without a pool and with a connect hook: the LISTEN connection goes through
    both (the hook names it), is not left in the transaction the hook began (where notifications would wait for
    good), and closes with the watch."""
    engine = create_async_engine(pg_url, poolclass=NullPool)

    @event.listens_for(engine.sync_engine, "connect")
    def _name(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.autocommit = True  # SQLAlchemy's documented way to set session state on connect
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET application_name = '{app}'")
        dbapi_connection.autocommit = False
        cursor.execute("SELECT 1")  # begins a transaction, as any statement of a hook does
        cursor.close()

    async with SQLStream(engine, owns_engine=True) as store, store.watch(stream_name="own") as events:
        assert await _backends(app, listening=True) == 1
        await store.set(_set(1, "own"))
        assert await _next_data(events) == 1
    await until_backends(app, listening=0)


async def test_a_watch_on_a_database_that_does_not_exist_raises_a_stream_error_naming_it(pg_url: str) -> None:
    """Before (SQLAlchemy 2.1): the dialect's own ``Error`` came out unwrapped, not a StreamError; then a
    ``StreamBackendError`` where get/set said "database unreachable"."""
    missing = f"iii_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_url).set(database=missing).render_as_string(hide_password=False)
    async with SQLStream.from_url(url) as store:
        with pytest.raises(StreamUnavailableError,
                           match=f'SQLStream.watch: database unreachable: database "{missing}" does not exist'):
            await store.watch().open()
