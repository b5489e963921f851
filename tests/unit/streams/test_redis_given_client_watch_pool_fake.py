"""Fast checks (fakeredis) of the watch pool a ``RedisStream`` makes for a client it is given: made like the
client's connections, none of the client's pool taken, the pool's own handlers not shared. The same behaviours
against a real server: tests/integration/streams/test_redis_given_client_watch_pool.py."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from iii.stream import StreamSetInput
from iii_streams import RedisStream
from iii_streams.redis import _WatchPool


async def test_a_watch_takes_nothing_of_the_callers_pool_of_one() -> None:
    """Before: the watch held the caller's only connection; the caller's SET failed (Too many connections)."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), max_connections=1)
    async with RedisStream(client) as store, store.watch("s") as watch:
        assert await client.set("app", "mine")
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="1", data=1))
        event = await asyncio.wait_for(anext(watch), 5)
        assert event["id"] == "1"
        assert not client.connection_pool._in_use_connections  # type: ignore[attr-defined]
    assert await client.get("app") == b"mine"  # the caller's client stays open


def test_the_watch_pool_is_made_like_the_clients_without_its_pool_handlers() -> None:
    from iii_streams.redis import _WATCH_CONNECTIONS
    from iii_streams.redis_internals import POOL_INJECTED

    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), max_connections=1, client_name="app")
    theirs = client.connection_pool
    pool = _WatchPool.like(client)
    assert pool is not None and pool.max_connections == _WATCH_CONNECTIONS
    assert pool.connection_class is theirs.connection_class
    assert pool.connection_kwargs["server"] is theirs.connection_kwargs["server"]
    assert pool.connection_kwargs["client_name"] == "app"
    # the objects of the caller's pool (its maintenance handler would act on our connections): ours are our own
    # (redis-py 8.0.0, our floor, puts neither in its pools' kwargs)
    for key in ("maint_notifications_pool_handler", "himport_registry"):
        assert key in POOL_INJECTED
        if key in theirs.connection_kwargs:
            assert pool.connection_kwargs.get(key) is not theirs.connection_kwargs[key], key


def test_a_client_without_a_connection_pool_has_no_watch_pool() -> None:
    assert _WatchPool.like(object()) is None  # type: ignore[arg-type]


async def test_a_watch_waits_for_the_watch_pool_then_opens() -> None:
    """Before: the caller's plain pool, exhausted, failed the watch at once (StreamUnavailableError)."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), max_connections=2)
    async with RedisStream(client) as store:
        pool = store._watch_client.connection_pool
        held = [await pool.get_connection() for _ in range(2)]  # type: ignore[no-untyped-call]
        opening = asyncio.ensure_future(store.watch("s").open())
        done, _ = await asyncio.wait({opening}, timeout=0.2)
        assert not done, opening.exception() if done else None
        await pool.release(held.pop())
        async with await asyncio.wait_for(opening, 5) as watch:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="freed", data=1))
            assert (await asyncio.wait_for(anext(watch), 5))["id"] == "freed"
        await pool.release(held.pop())


async def test_a_command_on_the_callers_exhausted_plain_pool_is_pool_exhausted() -> None:
    """Before: StreamUnavailableError, "Redis unreachable: Too many connections"."""
    from iii_streams.errors import PoolExhaustedError

    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), max_connections=1)
    async with RedisStream(client) as store:
        held = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            with pytest.raises(PoolExhaustedError, match="BlockingConnectionPool"):
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="1", data=1))
        finally:
            await client.connection_pool.release(held)
