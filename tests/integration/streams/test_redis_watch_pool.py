"""Redis watches and the command pool of ``RedisStream.from_url``: the watchers' pub/sub connection is not one of
the ``max_connections`` the writes use, and ``aclose()`` leaves no connection of the store on the server.

Before (H-RWP): the shared pub/sub connection came from the store's blocking pool and was held while any watch was
open. With ``max_connections=1`` an open watch left every ``set``/``get``/``update`` waiting ``pool_timeout`` and
failing with PoolExhaustedError; with N small a watch silently took one of the N; and a watch opened (or
re-subscribed after a lost connection) while the writes held every connection waited for one of theirs.
Connections are told apart with ``CLIENT LIST`` by this test's own ``client_name`` (the server is shared).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, StreamGapError
from iii_streams.events import Watch, event_json_parts
from iii_streams.redis import KeyLayout
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

# Short, so the code before the fix fails in about a second instead of the default 30 s.
POOL_TIMEOUT = 1.0


@pytest.fixture
def name() -> str:
    return f"hrwp{uuid.uuid4().hex[:10]}"


def _store(name: str, **options: Any) -> RedisStream:
    return RedisStream.from_url(require_redis(), layout=KeyLayout(name), channel=name, client_name=name,
                                max_connections=1, pool_timeout=POOL_TIMEOUT, **options)


async def _ours(redis_admin: aioredis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in await redis_admin.client_list() if c.get("name") == name]


async def _settles(redis_admin: aioredis.Redis, name: str, count: int, within: float = 5.0) -> list[dict[str, Any]]:
    """Our connections once there are ``count`` of them: the server drops a closed one when it reads the hang-up,
    which no event of ours reports, so ``CLIENT LIST`` is polled; the test fails if it never gets there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        conns = await _ours(redis_admin, name)
        if len(conns) == count or loop.time() > deadline:
            assert len(conns) == count, f"{len(conns)} connection(s) named {name}, expected {count}: {conns}"
            return conns
        await asyncio.sleep(0.01)


def _subscribed(conns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in conns if str(c.get("sub", "0")) != "0"]


async def _next_id(watch: Watch) -> str:
    return str((await asyncio.wait_for(anext(watch), 5))["id"])


async def test_a_write_with_one_command_connection_and_an_open_watch_completes_and_is_seen(
        name: str, redis_admin: aioredis.Redis) -> None:
    """Before: the set waited pool_timeout for the connection the watch held and failed with PoolExhaustedError."""
    async with _store(name) as store, store.watch(stream_name="s") as watch:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="a", data={"n": 1}))
        assert loop.time() - started < POOL_TIMEOUT / 2  # no wait for a connection the watch holds
        assert await _next_id(watch) == "a"
        # every kind of command, several at once, through the one command connection while the watch stays open
        key = {"stream_name": "s", "group_id": "g", "item_id": "a"}
        results = await asyncio.gather(
            store.get(StreamGetInput(**key)),
            *(store.update(StreamUpdateInput(**key, ops=[UpdateIncrement(path="n", by=1)])) for _ in range(5)))
        assert results[0] == {"n": 1}
        assert await store.get(StreamGetInput(**key)) == {"n": 6}
        assert [await _next_id(watch) for _ in range(5)] == ["a"] * 5
        conns = await _ours(redis_admin, name)
        # one command connection (max_connections=1) and the watch's own, subscribed one
        assert len(conns) == 2 and len(_subscribed(conns)) == 1


async def test_a_watch_opens_while_the_writes_hold_every_command_connection(name: str) -> None:
    """Before: the watch waited for the pool's only connection, held here, and failed after pool_timeout."""
    async with _store(name) as store:
        pool = store.client.connection_pool
        held = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            async with store.watch(stream_name="s") as watch:
                await _publish(held, name, "while-held")
                assert await _next_id(watch) == "while-held"
        finally:
            await pool.release(held)


async def _publish(conn: Any, channel: str, item: str) -> None:
    """An event of ``item`` published on ``conn`` (the command connection the test holds), shaped as a store
    write's."""
    head, tail = event_json_parts("s", "g", item)
    event = f'{head}create","data":1{tail}'
    await conn.send_command("PUBLISH", channel, event)
    assert await conn.read_response() == 1  # one subscriber: the store's shared pub/sub


async def test_a_lost_watch_connection_is_replaced_outside_the_command_pool(
        name: str, redis_admin: aioredis.Redis) -> None:
    """The replacement after a lost connection (here killed by the server) is made while the writes hold the only
    command connection: before, it waited for that connection, and the watch stayed deaf."""
    async with _store(name, report_watch_gaps=True) as store:
        pool = store.client.connection_pool
        async with store.watch(stream_name="s") as watch:
            held = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                for conn in _subscribed(await _ours(redis_admin, name)):
                    await redis_admin.client_kill_filter(_id=str(conn["id"]))
                with pytest.raises(StreamGapError):
                    await _next_id(watch)
                await _publish(held, name, "after")
                assert await _next_id(watch) == "after"
            finally:
                await pool.release(held)
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="set", data=1))
            assert await _next_id(watch) == "set"


@pytest.mark.parametrize("watch_open", [True, False])
async def test_aclose_leaves_no_connection_of_the_store(
        name: str, redis_admin: aioredis.Redis, watch_open: bool) -> None:
    """``aclose()`` closes the command connections and the watch's own, whether a watch is still open or not."""
    store = _store(name)
    watch = store.watch(stream_name="s")
    await watch.open()
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="x", data=1))
    assert await _next_id(watch) == "x"
    assert len(await _settles(redis_admin, name, 2)) == 2
    if not watch_open:
        await watch.aclose()
    await store.aclose()
    await _settles(redis_admin, name, 0)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(watch), 5)  # a watch left open ends with its store
    await watch.aclose()


async def test_aclose_after_a_replaced_watch_connection_leaves_none(name: str, redis_admin: aioredis.Redis) -> None:
    store = _store(name, report_watch_gaps=True)
    try:
        async with store.watch(stream_name="s") as watch:
            for conn in _subscribed(await _ours(redis_admin, name)):
                await redis_admin.client_kill_filter(_id=str(conn["id"]))
            with pytest.raises(StreamGapError):
                await _next_id(watch)
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="y", data=1))
            assert await _next_id(watch) == "y"
            assert len(_subscribed(await _settles(redis_admin, name, 2))) == 1
    finally:
        await store.aclose()
    await _settles(redis_admin, name, 0)
