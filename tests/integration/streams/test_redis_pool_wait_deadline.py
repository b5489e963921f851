"""A Redis store whose pool has run out makes its callers wait for a connection as long as each operation's own time
limit allows (the wait is part of the operation's time), never less: past the pool's own wait (``pool_timeout``) the
operation goes on waiting, and once its time is up it fails with its timeout, a ``PoolWaitTimeoutError`` (both a
``StreamTimeoutError`` and a ``PoolExhaustedError``) that says it waited for a connection, how many were in use and
names ``max_connections`` and ``pool_timeout``; a write so refused was not applied, also when it waited in a batch
(an update of an item this store wrote last, a publish).

Before: a pool of one whose only connection is held, and a pool_timeout of 0.2 s: every operation failed with
PoolExhaustedError at 0.2 s, its limit being 1 s. The client used directly (not through the store) keeps the pool's
own wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
)
from iii_streams import PoolExhaustedError, StreamTimeoutError, errors
from iii_streams.events import make_event
from iii_streams.redis import KeyLayout, RedisStream
from iii_streams.sql import PoolWaitTimeoutError
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.redis]

POOL_TIMEOUT = 0.2
LIMIT = 1.0  # each operation's own time limit
ITEM = {"stream_name": "s", "group_id": "g", "item_id": "i"}


@pytest.fixture
async def store(redis_key_prefix: str) -> AsyncIterator[RedisStream]:
    """A store on a pool of one connection whose own wait is POOL_TIMEOUT, its operations' limit LIMIT, with one
    item written last by an update (so this store knows its text: an update of it goes straight to its batch's
    write, which takes a connection, with no read first)."""
    async with RedisStream.from_url(require_redis(), max_connections=1, pool_timeout=POOL_TIMEOUT, timeout=LIMIT,
                                    layout=KeyLayout(prefix=f"{redis_key_prefix}:stream"),
                                    channel=f"{redis_key_prefix}::events") as opened:
        await opened.set(StreamSetInput(**ITEM, data={"n": -1}))
        await opened.update(StreamUpdateInput(**ITEM, ops=[{"type": "increment", "path": "n", "by": 1}]))
        assert opened._known.get((opened.layout.key("s", "g"), "i")) is not None
        yield opened


Call = Callable[[RedisStream], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "get": lambda s: s.get(StreamGetInput(**ITEM)),
    "list": lambda s: s.list(StreamListInput(stream_name="s", group_id="g")),
    "list_groups": lambda s: s.list_groups(StreamListGroupsInput(stream_name="s")),
    "set": lambda s: s.set(StreamSetInput(**ITEM, data={"n": 1})),
    "update": lambda s: s.update(StreamUpdateInput(**ITEM, ops=[{"type": "increment", "path": "n", "by": 1}])),
    "delete": lambda s: s.delete(StreamDeleteInput(**ITEM)),
    "publish": lambda s: s.publish(make_event("s", "g", "i", "update", {"n": 9})),
}
WRITES = ("set", "update", "delete", "publish")
AFTER = {"set": {"n": 1}, "update": {"n": 1}, "delete": None}


async def _hold(store: RedisStream) -> Any:
    """The pool's only connection, taken as any caller takes one."""
    return await store.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("operation", list(CALLS))
async def test_an_operation_waits_past_pool_timeout_and_runs_once_a_connection_is_free(
        store: RedisStream, operation: str) -> None:
    pool = store.client.connection_pool
    held = await _hold(store)
    try:
        call = asyncio.ensure_future(CALLS[operation](store))
        # three of the pool's own waits: it failed at the first before
        done, _ = await asyncio.wait((call,), timeout=POOL_TIMEOUT * 3)
        assert not done, call.exception()
        assert store.pool_rewaits >= 1
    finally:
        await pool.release(held)  # at 0.6 s of its 1 s
    await asyncio.wait_for(call, 5)  # ran once the connection was given back
    assert await store.get(StreamGetInput(**ITEM)) == AFTER.get(operation, {"n": 0})


@pytest.mark.parametrize("operation", list(CALLS))
async def test_past_its_own_time_limit_it_fails_with_its_timeout_naming_the_pool(
        store: RedisStream, operation: str) -> None:
    loop = asyncio.get_running_loop()
    pool = store.client.connection_pool
    held = await _hold(store)
    try:
        started = loop.time()
        with pytest.raises(StreamTimeoutError) as failure:
            await CALLS[operation](store)
        took = loop.time() - started
    finally:
        await pool.release(held)
    assert LIMIT * 0.9 <= took < LIMIT + 1.5, took  # not at the pool's own wait
    error = failure.value
    assert isinstance(error, PoolWaitTimeoutError) and isinstance(error, PoolExhaustedError), repr(error)
    message = str(error)
    assert f"did not finish within {LIMIT:g} s" in message, message
    assert "waited" in message and "for a Redis connection" in message, message
    assert "all 1 of the pool's in use" in message, message
    assert f"max_connections=1, pool_timeout={POOL_TIMEOUT:g} s" in message, message
    if operation in WRITES:
        assert error.applied is False and "withdrawn and not applied" in message, message
    # nothing of a refused write was applied, and the store serves again
    assert await store.get(StreamGetInput(**ITEM)) == {"n": 0}


@pytest.mark.parametrize("operation", ["get", "set"])
async def test_a_calls_own_timeout_bounds_its_wait(redis_key_prefix: str, operation: str) -> None:
    """timeout= of the call, on a store whose own limit is the default 60 s: the wait ends at the call's."""
    async with RedisStream.from_url(require_redis(), max_connections=1, pool_timeout=POOL_TIMEOUT,
                                    layout=KeyLayout(prefix=f"{redis_key_prefix}:stream"),
                                    channel=f"{redis_key_prefix}::events") as store:
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "get": lambda: store.get(StreamGetInput(**ITEM), timeout=LIMIT),
            "set": lambda: store.set(StreamSetInput(**ITEM, data=1), timeout=LIMIT),
        }
        pool = store.client.connection_pool
        held = await _hold(store)
        try:
            call = asyncio.ensure_future(calls[operation]())
            done, _ = await asyncio.wait((call,), timeout=POOL_TIMEOUT * 2)
            assert not done, call.exception()
            with pytest.raises(PoolWaitTimeoutError, match=f"within {LIMIT:g} s: it waited"):
                await asyncio.wait_for(call, LIMIT + 1.5)
        finally:
            await pool.release(held)
        if operation == "set":
            assert call.exception().applied is False  # type: ignore[union-attr]
        assert await store.get(StreamGetInput(**ITEM)) is None


async def test_a_store_with_no_time_limit_waits_for_good(redis_key_prefix: str) -> None:
    """timeout=None, the store's "no limit": its wait for a connection has no end of its own either."""
    async with RedisStream.from_url(require_redis(), max_connections=1, pool_timeout=POOL_TIMEOUT, timeout=None,
                                    layout=KeyLayout(prefix=f"{redis_key_prefix}:stream"),
                                    channel=f"{redis_key_prefix}::events") as store:
        pool = store.client.connection_pool
        held = await _hold(store)
        try:
            call = asyncio.ensure_future(store.set(StreamSetInput(**ITEM, data=1)))
            done, _ = await asyncio.wait((call,), timeout=POOL_TIMEOUT * 5)
            assert not done, call.exception()
            assert store.pool_rewaits >= 2
        finally:
            await pool.release(held)
        assert (await asyncio.wait_for(call, 5)).old_value is None
        assert await store.get(StreamGetInput(**ITEM)) == 1


async def test_the_client_used_directly_keeps_the_pools_own_wait(store: RedisStream) -> None:
    """Only the store's operations wait on: a command of the client itself still fails at pool_timeout."""
    loop = asyncio.get_running_loop()
    pool = store.client.connection_pool
    held = await _hold(store)
    try:
        started = loop.time()
        with pytest.raises(PoolExhaustedError) as failure:
            await store.client.ping()
        took = loop.time() - started
    finally:
        await pool.release(held)
    assert POOL_TIMEOUT * 0.9 <= took < LIMIT, took
    assert not isinstance(failure.value, StreamTimeoutError), repr(failure.value)
    assert store.pool_rewaits == 0


async def test_a_timeout_with_a_free_pool_says_nothing_of_the_pool(store: RedisStream) -> None:
    """The words are for a wait on a full pool only: a plain timeout stays a plain StreamTimeoutError."""
    with pytest.raises(StreamTimeoutError) as failure:
        async with store._guard("get", POOL_TIMEOUT):
            await asyncio.Event().wait()
    assert not isinstance(failure.value, PoolExhaustedError), repr(failure.value)
    assert "Redis connection" not in str(failure.value)


def test_both_stores_raise_one_class() -> None:
    """Defined with the other errors, and still importable from iii_streams.sql."""
    assert getattr(errors, "PoolWaitTimeoutError", None) is PoolWaitTimeoutError
