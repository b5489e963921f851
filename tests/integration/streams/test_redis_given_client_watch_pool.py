"""A ``RedisStream`` on a client the caller passes: its watches' pub/sub connection never comes from that
client's pool, and the store's own watch pool makes a watch wait (bounded) for a connection, never fail at once.

Before: the shared pub/sub connection was one of the caller's pool, held while any watch was open. With the
caller's ``max_connections=1`` every command of the caller and of the store failed at once ("Too many
connections"; a blocking pool: waited its timeout, then failed); with ``max_connections=10`` the caller had 9; a
watch opened (or re-subscribed) while the caller's app held every connection failed at once or waited for the app.
Connections are told apart with ``CLIENT LIST`` by the caller's ``client_name``, which the store's watch connection
takes over (the server is shared).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import RedisStream, StreamGapError
from iii_streams.errors import PoolExhaustedError
from iii_streams.redis import KeyLayout
from tests.integration.streams.test_redis_watch_pool import _next_id, _ours, _publish, _settles, _subscribed
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
def name() -> str:
    return f"hgcw{uuid.uuid4().hex[:10]}"


def _client(name: str, size: int, *, blocking: bool = False, **options: Any) -> aioredis.Redis:
    """The caller's own client: a pool of ``size`` connections named ``name`` (a blocking one waits 1 s)."""
    if blocking:
        pool: aioredis.ConnectionPool = aioredis.BlockingConnectionPool.from_url(
            require_redis(), max_connections=size, timeout=1, client_name=name, **options)
    else:
        pool = aioredis.ConnectionPool.from_url(require_redis(), max_connections=size, client_name=name, **options)
    return aioredis.Redis.from_pool(pool)


@pytest.fixture
async def app(name: str) -> AsyncIterator[aioredis.Redis]:
    """The caller's client with a plain pool of one connection (exhausted: "Too many connections" at once)."""
    client = _client(name, 1)
    try:
        yield client
    finally:
        await client.aclose()


def _store(client: aioredis.Redis, name: str, **options: Any) -> RedisStream:
    return RedisStream(client, layout=KeyLayout(name), channel=name, **options)


async def test_an_open_watch_leaves_the_callers_only_connection_to_the_caller(
        name: str, app: aioredis.Redis, redis_admin: aioredis.Redis) -> None:
    """Before: the caller's SET and the store's set failed with MaxConnectionsError: Too many connections."""
    async with _store(app, name) as store, store.watch("s") as watch, store.watch("s") as other:
        assert await app.set(f"{name}:app", "mine")  # the caller's own command, on its own only connection
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="a", data=1))
        assert await _next_id(watch) == "a" and await _next_id(other) == "a"
        conns = await _settles(redis_admin, name, 2)
        # the caller's one connection and the store's watch connection, made like the caller's (its client_name)
        assert len(_subscribed(conns)) == 1
        assert not app.connection_pool._in_use_connections  # type: ignore[attr-defined]


async def test_eleven_watches_leave_all_ten_of_a_blocking_pool_to_the_caller(
        name: str, redis_admin: aioredis.Redis) -> None:
    """Before: with 11 watches open the caller's 10th connection waited the pool's 1 s and failed ("No connection
    available."); here the caller holds all 10 while a 12th watch opens and hears an event published on one."""
    client = _client(name, 10, blocking=True)
    try:
        async with _store(client, name) as store:
            watches = [store.watch("s") for _ in range(11)]
            for watch in watches:
                await watch.open()
            pool = client.connection_pool
            held = await asyncio.gather(*(pool.get_connection() for _ in range(10)))  # type: ignore[no-untyped-call]
            try:
                async with store.watch("s") as late:
                    await _publish(held[0], name, "while-all-held")
                    assert await _next_id(late) == "while-all-held"
                    assert [await _next_id(w) for w in watches] == ["while-all-held"] * 11
            finally:
                for conn in held:
                    await pool.release(conn)
            assert len(_subscribed(await _ours(redis_admin, name))) == 1  # 12 watches, one connection
            for watch in watches:
                await watch.aclose()
    finally:
        await client.aclose()


async def test_a_lost_watch_connection_is_replaced_while_the_caller_holds_its_only_one(
        name: str, app: aioredis.Redis, redis_admin: aioredis.Redis) -> None:
    """The replacement after the server killed the watch connection is made while the caller holds its pool's only
    connection: before, the watch opened on that connection, and its re-subscribe would have failed for good."""
    async with _store(app, name, report_watch_gaps=True) as store, store.watch("s") as watch:
        pool = app.connection_pool
        held = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            [subscribed] = _subscribed(await _ours(redis_admin, name))
            assert await redis_admin.client_kill_filter(_id=str(subscribed["id"])) == 1
            with pytest.raises(StreamGapError):
                await _next_id(watch)
            [replacement] = _subscribed(await _ours(redis_admin, name))  # subscribed again, as the caller's held
            assert replacement["id"] != subscribed["id"]
            await _publish(held, name, "after")
            assert await _next_id(watch) == "after"
        finally:
            await pool.release(held)


def _either(made: str, app: aioredis.Redis, name: str) -> RedisStream:
    """A store on the caller's client, or one of ``from_url`` (its watch pool is the same kind)."""
    if made == "given":
        return _store(app, name)
    return RedisStream.from_url(require_redis(), layout=KeyLayout(name), channel=name, client_name=name)


@pytest.mark.parametrize("made", ["given", "from_url"])
async def test_a_watch_waits_for_the_stores_watch_pool_and_opens_when_one_is_freed(
        name: str, app: aioredis.Redis, made: str) -> None:
    """Exhausting the store's own bound makes a watch wait, not fail. Before, a given client's watch pool was the
    caller's, and with every connection held the watch failed at once (StreamUnavailableError: Too many
    connections); from_url's was a plain pool of 100, which failed the same way."""
    async with _either(made, app, name) as store:
        pool = store._watch_client.connection_pool
        held = [await pool.get_connection() for _ in range(pool.max_connections)]  # type: ignore[no-untyped-call]
        try:
            opening = asyncio.ensure_future(store.watch("s").open())
            done, _ = await asyncio.wait({opening}, timeout=0.3)
            assert not done, opening.exception() if done else None  # waiting, not failed
            await pool.release(held.pop())
            watch = await asyncio.wait_for(opening, 5)
        finally:
            for conn in held:
                await pool.release(conn)
        async with watch:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="freed", data=1))
            assert await _next_id(watch) == "freed"


@pytest.mark.parametrize("made", ["given", "from_url"])
async def test_a_watch_past_the_watch_pools_wait_gets_pool_exhausted(
        name: str, app: aioredis.Redis, made: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its bound the wait ends with PoolExhaustedError naming the watch connections. Before: "Too many
    connections" at once, as a StreamUnavailableError that said Redis was unreachable."""
    monkeypatch.setattr("iii_streams.redis._WATCH_POOL_TIMEOUT", 0.3, raising=False)
    async with _either(made, app, name) as store:
        pool = store._watch_client.connection_pool
        held = [await pool.get_connection() for _ in range(pool.max_connections)]  # type: ignore[no-untyped-call]
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PoolExhaustedError, match="watch connections exhausted"):
                await store.watch("s").open()
            assert loop.time() - started >= 0.3
        finally:
            for conn in held:
                await pool.release(conn)


async def test_aclose_closes_the_watch_connection_and_leaves_the_callers_client_open(
        name: str, app: aioredis.Redis, redis_admin: aioredis.Redis) -> None:
    store = _store(app, name)
    watch = store.watch("s")
    await watch.open()
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="x", data=1))
    assert await _next_id(watch) == "x"
    await store.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(watch), 5)
    await watch.aclose()
    assert await app.get(f"{name}:none") is None  # the caller's client still works
    conns = await _settles(redis_admin, name, 1)  # the caller's command connection alone
    assert not _subscribed(conns)


async def test_a_decoding_callers_client_gives_its_options_to_the_watch_connection(name: str) -> None:
    """decode_responses=True reaches the watch connection too (messages read as text): events still arrive whole."""
    client = _client(name, 1, decode_responses=True)
    try:
        async with _store(client, name) as store, store.watch("s") as watch:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="é", data={"t": "ü"}))
            event = await asyncio.wait_for(anext(watch), 5)
            assert (event["id"], event["event"]["data"]) == ("é", {"t": "ü"})
            assert store._watch_client.connection_pool.connection_kwargs["decode_responses"] is True
    finally:
        await client.aclose()


async def test_a_command_on_the_callers_exhausted_plain_pool_says_so(name: str, app: aioredis.Redis) -> None:
    """The caller's plain pool fails a command at once when every connection is in use (its choice: a blocking
    pool waits). Before, that was a StreamUnavailableError saying Redis was unreachable."""
    async with _store(app, name) as store:
        pool = app.connection_pool
        held = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            with pytest.raises(PoolExhaustedError, match="client's connection pool is exhausted"):
                await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="x"))
        finally:
            await pool.release(held)
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="x")) is None
