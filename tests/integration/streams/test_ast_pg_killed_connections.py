"""Attack A-St on SQLStream over PostgreSQL: the server ends connections (``pg_terminate_backend``, as a restart,
a failover or an idle-session timeout does), and a watcher falls behind.

- Idle pooled connections ended: before, the next operation on each failed with StreamUnavailableError although
  the database was up; now the pool replaces a connection the server closed when it is checked out (no extra
  round trip), and every operation succeeds.
- The LISTEN connection of a ``watch()`` ended: before, the watcher waited forever and never saw another event;
  now it reconnects (with a warning that notifications meanwhile were lost) and sees later writes.
- A watcher more than ``watch_queue_size`` events behind: before, the excess was dropped silently; now it gets
  StreamLagError, as from the in-process hub."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import SQLStream, StreamLagError
from tests.polling import until
from tests.services import require_postgres

POOL = 3


async def _pooled_drivers(store: SQLStream) -> list[Any]:
    """Fill the pool with POOL connections and return their asyncpg connections (back in the pool, idle)."""
    drivers: list[Any] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with store.engine.connect() as conn:
            drivers.append((await conn.get_raw_connection()).driver_connection)
            if len(drivers) == POOL:
                release.set()
            await release.wait()

    await asyncio.gather(*(hold() for _ in range(POOL)))
    return drivers


async def _terminate(pg_url: str, last_query: str = "%") -> int:
    """End the database's connections whose last statement is LIKE ``last_query``: how many."""
    database = make_url(pg_url).database
    admin = await asyncpg.connect(require_postgres())
    try:
        return int(await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND query LIKE $2",
            database, last_query))
    finally:
        await admin.close()


async def test_operations_after_the_server_ended_idle_pooled_connections_succeed(pg_url: str) -> None:
    item = {"stream_name": "killed", "group_id": "g", "item_id": "i"}
    async with SQLStream.from_url(pg_url, pool_size=POOL, max_overflow=0) as store:
        await store.set(StreamSetInput(**item, data={"n": 0}))
        for _ in range(2):  # twice: the connections that replaced the ended ones can be ended and replaced too
            drivers = await _pooled_drivers(store)
            assert await _terminate(pg_url) >= POOL
            await until(lambda: all(d.is_closed() for d in drivers))  # noqa: B023 - awaited in this iteration
            increment = StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])
            results = await asyncio.gather(
                store.get(StreamGetInput(**item)),
                store.list(StreamListInput(stream_name="killed", group_id="g")),
                store.update(increment),
                store.set(StreamSetInput(stream_name="killed", group_id="g", item_id="other", data=1)),
            )
            assert results[0] is not None and results[1]
        assert await store.get(StreamGetInput(**item)) == {"n": 2}


async def test_a_watch_whose_listen_connection_the_server_ended_reconnects(pg_url: str) -> None:
    async with SQLStream.from_url(pg_url) as watcher, SQLStream.from_url(pg_url) as writer:
        async with watcher.watch(stream_name="relisten") as events:
            subscription: Any = events._sub
            ended = subscription._driver
            waiting = asyncio.ensure_future(anext(events))
            assert await _terminate(pg_url, "LISTEN%") == 1
            # set once the new connection LISTENs: from then on no write is missed
            await until(lambda: subscription._driver not in (None, ended) or waiting.done())
            await writer.set(StreamSetInput(stream_name="relisten", group_id="g", item_id="i", data=7))
            async with asyncio.timeout(10):
                event = await waiting
            assert event["event"] == {"type": "create", "data": 7}


async def test_a_watcher_that_falls_behind_gets_a_lag_error_not_a_silent_gap(pg_url: str) -> None:
    async with SQLStream.from_url(pg_url, watch_queue_size=3) as watcher, SQLStream.from_url(pg_url) as writer:
        async with watcher.watch(stream_name="lagging") as events:
            for n in range(8):
                await writer.set(StreamSetInput(stream_name="lagging", group_id="g", item_id=str(n), data=n))
            subscription: Any = events._sub
            await until(lambda: subscription._queue.full())
            seen: list[Any] = []
            with pytest.raises(StreamLagError, match="more than 3 events behind"):
                async with asyncio.timeout(5):
                    while True:
                        seen.append((await anext(events))["event"]["data"])
            assert seen == [0, 1, 2]  # every queued event, then the lag
