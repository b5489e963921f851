"""Fixtures of the stream store tests.

The stores a test runs on: ``store_kind`` (memory, SQLite, PostgreSQL and Redis; a module wanting others overrides
it), ``store_url`` (a store of that kind the test has to itself) and ``store`` (that store, open). The engine's
stream tests (``tests/integration/engine_streams``) get ``store_kind``, ``store_url`` and ``redis_key_prefix`` too.
The SQL stores' pool gate tests take ``pool_wait_url`` (a SQLite file or the scratch PostgreSQL database, each).

Example:
    async def test_x(store: Backend) -> None:          # runs once on each of the four stores
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))

    @pytest.fixture(params=["memory", "redis"])          # in a module wanting two of them
    def store_kind(request: pytest.FixtureRequest) -> str:
        return str(request.param)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from iii_streams import Backend, open_stream
from tests.services import require_postgres, require_redis
from tests.stall_relay import Relay


async def delete_redis_keys(match: str) -> None:
    """Delete the keys of the test Redis that match the glob ``match`` (a test's own prefix)."""
    import redis.asyncio as aioredis  # here: the PostgreSQL tests need no redis package

    raw = aioredis.Redis.from_url(require_redis())
    try:
        keys = [key async for key in raw.scan_iter(match=match, count=1000)]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()


@pytest.fixture
async def pg_relay() -> AsyncIterator[Relay]:
    """A bare TCP listener in front of the PostgreSQL server: it relays until told to go silent (``blackhole``)."""
    relayed = Relay(make_url(require_postgres()).port or 5432)
    await relayed.start()
    yield relayed
    await relayed.close()


@pytest.fixture
def redis_key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix of the test's own (named after its module); the keys under it are deleted afterwards.

    Synchronous (the deletion runs its own event loop), so the synchronous ``store_url`` can ask for it.
    """
    prefix = f"{request.module.__name__.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:16]}"
    yield prefix
    asyncio.run(delete_redis_keys(f"{prefix}:*"))


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store ``store_url`` gives: each of the four (a module may override this fixture)."""
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a store of ``store_kind`` that the test has to itself: ``memory://``, a new SQLite file in
    ``tmp_path``, the module's scratch PostgreSQL database (``pg_url``, migrated), or the test Redis under a key
    prefix of its own (and so events channels of its own, ``<prefix>::stream::events``), its keys deleted
    afterwards. PostgreSQL and Redis skip, or fail under CI, when they do not answer.

    Synchronous: the scratch database is made, and Redis keys deleted, by event loops of their own.
    """
    if store_kind == "memory":
        yield "memory://"
    elif store_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    elif store_kind == "postgres":
        yield str(request.getfixturevalue("pg_url"))
    elif store_kind == "redis":
        url = require_redis()
        yield f"{url}?key_prefix={request.getfixturevalue('redis_key_prefix')}"
    else:
        raise ValueError(f"store_kind must be memory, sqlite, postgres or redis, got {store_kind!r}")


@pytest.fixture(params=["sqlite", "postgres"])
def pool_wait_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For the tests of a SQL store's pool gate: a SQLite file of the test's own, or the module's scratch PostgreSQL
    database (synchronous: it makes it)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Backend]:
    """The store at ``store_url``, open for the test and closed after it (a SQLite store makes its tables, as
    by default; the PostgreSQL database is migrated already)."""
    async with open_stream(store_url) as opened:
        yield opened
