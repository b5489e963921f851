"""SQLite: the store's autocommitted statements (reads, single-caller compare-and-set updates) leave the connection's
isolation alone: no ``PRAGMA read_uncommitted`` and no isolation change per checkout, so a lone update costs one
statement's trips to aiosqlite's thread, and the driver never gets transaction control back between writes."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import SQLStream
from tests.integration.streams.sqlite_statements import count_trips

_KEY = {"stream_name": "s", "group_id": "g", "item_id": "i"}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}"


@pytest.fixture
async def store(url: str) -> AsyncIterator[SQLStream]:
    async with SQLStream.from_url(url) as s:
        yield s


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Every call aiosqlite hands to its thread (by name) and every statement text, counted."""
    return count_trips(monkeypatch)[0]


async def test_lone_updates_send_one_statement_each(
    store: SQLStream, url: str, trips: collections.Counter[str]
) -> None:
    request = StreamUpdateInput(**_KEY, ops=[UpdateIncrement(path="n", by=1)])
    await store.set(StreamSetInput(**_KEY, data={"n": 0}))
    await store.update(request)  # the store now knows the committed value: the next ones are compare-and-set
    trips.clear()
    for _ in range(10):
        await store.update(request)
    async with SQLStream.from_url(url) as other:  # committed: another connection, another store, sees them all
        assert await other.get(StreamGetInput(**_KEY)) == {"n": 11}
    trips.clear()
    await store.update(request)
    assert trips["PRAGMA read_uncommitted"] == 0, trips
    assert trips["UPDATE iii_stream_items"] == 1, trips
    # one hand-off, the statement straight to the driver (was 4 through SQLAlchemy: cursor, execute, cursor close,
    # the connection's end-of-use rollback; 7 before that, and an isolation change)
    assert sum(trips[name] for name in ("cursor", "execute", "close", "rollback")) == 1, trips


async def test_pooled_connections_stay_in_autocommit(store: SQLStream) -> None:
    """A connection back from an autocommitted read is still in the driver's autocommit mode (isolation_level
    None), the mode the store's connect hook sets so that only its BEGIN IMMEDIATE begins a transaction."""
    await store.set(StreamSetInput(**_KEY, data=1))
    assert await store.get(StreamGetInput(**_KEY)) == 1
    async with store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        assert raw.driver_connection.isolation_level is None
