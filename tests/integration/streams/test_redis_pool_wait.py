"""A Redis store's pool that runs out makes callers wait, never fail: past ``max_connections`` a caller waits for a
connection within its operation's own time limit, then gets its usual ``StreamTimeoutError`` (a write ``applied``
``False``), whose message says the pool was full; closing the store ends the waits left, nothing of them sent.

Before: ``RedisStream.from_url``'s pool failed every wait at ``pool_timeout``'s 30 s with ``PoolExhaustedError``,
whatever time the operation had left (the store's default is 60 s), and its timeouts did not name the pool.
A ``pool_timeout`` (or the URL's ``?timeout=``) given still ends the wait sooner, as asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamListGroupsInput, StreamSetInput
from iii_streams import RedisStream, StreamClosedError, StreamTimeoutError
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

FULL = "waiting for a Redis connection: all 1 were in use"


def _url(prefix: str, query: str = "") -> str:
    return f"{require_redis()}?key_prefix={prefix}{query}"


@pytest.fixture
async def one_connection(redis_key_prefix: str) -> AsyncIterator[tuple[RedisStream, Any]]:
    """A store whose pool has one connection, and that connection, held by the test (released at the end)."""
    store = RedisStream.from_url(_url(redis_key_prefix, "&max_connections=1"))
    pool: Any = store.client.connection_pool
    held = await pool.get_connection()
    try:
        yield store, held
    finally:
        await pool.release(held)
        await store.aclose()


async def _until_waiting(store: RedisStream, count: int) -> None:
    """Until ``count`` takes wait for the store's pool (a condition polled: the pool has no event for it)."""
    pool: Any = store.client.connection_pool
    for _ in range(2_000):
        if len(pool._waiting) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} takes never waited for the pool: {len(pool._waiting)}")


def _get(item: str) -> StreamGetInput:
    return StreamGetInput(stream_name="s", group_id="g", item_id=item)


def _set(item: str, data: Any) -> StreamSetInput:
    return StreamSetInput(stream_name="s", group_id="g", item_id=item, data=data)


async def test_the_pool_wait_is_the_operations_own_limit_unless_one_is_given(redis_key_prefix: str) -> None:
    default = RedisStream.from_url(_url(redis_key_prefix))
    in_url = RedisStream.from_url(_url(redis_key_prefix, "&timeout=2.5"))
    keyword = RedisStream.from_url(_url(redis_key_prefix), pool_timeout=1.5)
    try:
        waits = [s.client.connection_pool.timeout for s in (default, in_url, keyword)]  # type: ignore[attr-defined]
        assert waits == [None, 2.5, 1.5]
    finally:
        for s in (default, in_url, keyword):
            await s.aclose()


async def test_a_caller_past_the_pool_times_out_on_its_own_limit_and_the_message_names_the_pool(
        one_connection: tuple[RedisStream, Any]) -> None:
    store, _ = one_connection
    with pytest.raises(StreamTimeoutError) as read:
        await store.get(_get("a"), timeout=0.3)
    assert "RedisStream.get did not finish within 0.3 s" in str(read.value) and FULL in str(read.value)
    with pytest.raises(StreamTimeoutError) as write:
        await store.set(_set("a", 1), timeout=0.3)
    assert FULL in str(write.value) and write.value.applied is False, str(write.value)


async def test_a_waiting_caller_gets_the_connection_when_it_is_given_back(
        one_connection: tuple[RedisStream, Any]) -> None:
    store, held = one_connection
    pool: Any = store.client.connection_pool
    write = asyncio.ensure_future(store.set(_set("b", {"n": 1}), timeout=20))
    read = asyncio.ensure_future(store.get(_get("b"), timeout=20))
    await _until_waiting(store, 1)
    await pool.release(held)
    assert (await write).old_value is None
    assert await read in (None, {"n": 1})
    assert await store.get(_get("b")) == {"n": 1}
    assert await pool.get_connection() is held  # the pool's one connection, taken again for the fixture to give back


async def test_closing_the_store_ends_the_waits_and_sends_nothing_of_them(redis_key_prefix: str) -> None:
    store = RedisStream.from_url(_url(redis_key_prefix, "&max_connections=1"), timeout=None)
    pool: Any = store.client.connection_pool
    held = await pool.get_connection()
    try:
        write = asyncio.ensure_future(store.set(_set("c", 1)))  # no time limit at all: only the close ends it
        listing = asyncio.ensure_future(store.list_groups(StreamListGroupsInput(stream_name="s")))
        await _until_waiting(store, 2)
        await asyncio.wait_for(store.aclose(), 15)
        for waited in (write, listing):
            with pytest.raises(StreamClosedError) as closed:
                await waited
            assert closed.value.applied is False, str(closed.value)
        with pytest.raises(StreamClosedError):  # and a take after the close is refused at once
            await pool.get_connection()
    finally:
        await pool.release(held)
        await store.aclose()
    check = RedisStream.from_url(_url(redis_key_prefix))
    try:
        assert await check.get(_get("c")) is None  # the write never reached Redis
    finally:
        await check.aclose()
