"""A SQL store whose pool has run out makes its callers wait for a connection as long as each operation's own time
limit allows (the wait is part of the operation's time), never less: past the pool's own wait (``pool_timeout``) the
operation goes on waiting, and once its time is up it fails with its timeout, a ``PoolWaitTimeoutError`` (both a
``StreamTimeoutError`` and a ``PoolExhaustedError``) that says it waited for a connection, how many were in use and
names ``pool_size`` and ``max_overflow``; a write so refused was not applied.

Before (attack on the SQL store, default pool 5 + 10): 8,000 mixed operations with the default 60 s limit got 1,922
PoolExhaustedError after the pool's 30 s wait. Here a pool of one whose only connection is held, and a pool_timeout
of 0.2 s: the operations failed at 0.2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput
from iii_streams import PoolExhaustedError, SQLStream, StreamTimeoutError
from iii_streams.sql import PoolWaitTimeoutError

pytestmark = pytest.mark.timeout(30)

POOL_TIMEOUT = 0.2
ITEM = {"stream_name": "s", "group_id": "g", "item_id": "i"}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file of the test's own, or the module's scratch PostgreSQL database (synchronous: it makes it)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(url: str) -> AsyncIterator[SQLStream]:
    """A store on a pool of one connection whose own wait is POOL_TIMEOUT, with one item written."""
    async with SQLStream.from_url(url, create=True, pool_size=1, max_overflow=0,
                                  pool_timeout=POOL_TIMEOUT) as opened:
        await opened.set(StreamSetInput(**ITEM, data={"n": 0}))
        yield opened


Call = Callable[[SQLStream, float | None], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "get": lambda s, t: s.get(StreamGetInput(**ITEM), timeout=t),
    "list": lambda s, t: s.list(StreamListInput(stream_name="s", group_id="g"), timeout=t),
    "set": lambda s, t: s.set(StreamSetInput(**ITEM, data={"n": 1}), timeout=t),
    "update": lambda s, t: s.update(StreamUpdateInput(**ITEM, ops=[{"type": "increment", "path": "n", "by": 1}]),
                                    timeout=t),
}


@pytest.mark.parametrize("operation", list(CALLS))
async def test_an_operation_waits_past_pool_timeout_and_runs_once_a_connection_is_free(
        store: SQLStream, operation: str) -> None:
    held = await store.engine.connect()  # the pool's only connection
    try:
        call = asyncio.ensure_future(CALLS[operation](store, 10))
        # three of the pool's own waits: it failed at the first before
        done, _ = await asyncio.wait((call,), timeout=POOL_TIMEOUT * 3)
        assert not done, call.exception()
        assert store.pool_rewaits >= 1
    finally:
        await held.close()
    await asyncio.wait_for(call, 5)  # ran once the connection was given back
    assert await store.get(StreamGetInput(**ITEM)) == {"n": 1 if operation in ("set", "update") else 0}


@pytest.mark.parametrize("operation", list(CALLS))
async def test_past_its_own_time_limit_it_fails_with_its_timeout_naming_the_pool(
        store: SQLStream, operation: str) -> None:
    limit = POOL_TIMEOUT * 3
    loop = asyncio.get_running_loop()
    held = await store.engine.connect()
    try:
        started = loop.time()
        with pytest.raises(StreamTimeoutError) as failure:
            await CALLS[operation](store, limit)
        took = loop.time() - started
    finally:
        await held.close()
    assert took >= limit * 0.9, took  # not at the pool's own wait
    error = failure.value
    assert isinstance(error, PoolWaitTimeoutError) and isinstance(error, PoolExhaustedError), repr(error)
    message = str(error)
    assert f"did not finish within {limit:g} s" in message, message
    assert "waited" in message and "for a database connection" in message, message
    assert "all 1 of the pool's in use" in message and "pool_size=1, max_overflow=0" in message, message
    if operation in ("set", "update"):
        assert error.applied is False and "withdrawn and not applied" in message, message
    # nothing of a refused write was applied, and the store serves again
    assert await store.get(StreamGetInput(**ITEM)) == {"n": 0}


async def test_a_timeout_with_a_free_pool_says_nothing_of_the_pool(store: SQLStream) -> None:
    """The words are for a wait on a full pool only: a plain timeout stays a plain StreamTimeoutError."""
    blocker = asyncio.Event()

    async def slow(_conn: Any) -> list[Any]:
        await blocker.wait()
        return []

    with pytest.raises(StreamTimeoutError) as failure:
        async with store._guard("get", POOL_TIMEOUT):
            await store._read_again(slow)
    assert not isinstance(failure.value, PoolExhaustedError), repr(failure.value)
    assert "database connection" not in str(failure.value)
