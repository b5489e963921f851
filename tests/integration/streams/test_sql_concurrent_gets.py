"""SQL store: concurrent gets are read together (:class:`iii_streams.coalescing.ReadCoalescer`), a few statements
for many gets, each get still answered with its own item's value, its own error, and every write that completed
before it. Before, each get took a pooled connection of its own: 32 in flight cost twice the CPU of one at a time."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from iii.stream import StreamSetInput
from iii_streams import SQLStream, StreamDataError
from iii_streams.schema import TABLE_NAME, item_key
from tests.integration.streams.counted_reads import CountedReads, get_input, many_gets_read_together


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    if request.param == "sqlite-memory":
        return "sqlite+aiosqlite://"
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
async def store(url: str) -> AsyncIterator[SQLStream]:
    async with SQLStream.from_url(url, timeout=10, create=True) as opened:
        yield opened



async def test_many_gets_in_flight_are_read_in_a_few_statements_each_with_its_own_value(
        store: SQLStream, monkeypatch: pytest.MonkeyPatch) -> None:
    await many_gets_read_together(store, f"c-{uuid.uuid4().hex[:8]}", monkeypatch)


async def test_a_get_sees_every_write_completed_before_it(store: SQLStream) -> None:
    stream = f"w-{uuid.uuid4().hex[:8]}"
    for round_ in range(20):
        writes = [store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=f"i{i}", data=round_))
                  for i in range(8)]
        await asyncio.gather(*writes)
        reads = await asyncio.gather(*(store.get(get_input(stream, f"i{i}")) for i in range(8)))
        assert reads == [round_] * 8


async def _corrupt(url: str, stream: str, item: str) -> None:
    key = item_key(stream, "g", item)
    if url.startswith("sqlite"):
        other = sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None, timeout=5)
        try:
            other.execute(f"UPDATE {TABLE_NAME} SET value = CAST(X'7b2276223a22ff227d' AS TEXT) WHERE item_key = ?",
                          (key,))
        finally:
            other.close()
        return
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"UPDATE {TABLE_NAME} SET value = '{{not json' WHERE item_key = $1", key)
    finally:
        await conn.close()


async def test_an_unreadable_value_fails_only_its_own_get_among_those_read_with_it(url: str,
                                                                                    store: SQLStream) -> None:
    if url == "sqlite+aiosqlite://":
        pytest.skip("another program cannot reach an in-memory database")
    stream = f"u-{uuid.uuid4().hex[:8]}"
    for item in ("a", "bad", "b"):
        await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=item))
    await _corrupt(url, stream, "bad")
    counted = CountedReads(store, lanes=1)
    results = await asyncio.gather(*(store.get(get_input(stream, item)) for item in ("a", "a", "bad", "b", "bad", "b")),
                                   return_exceptions=True)
    assert [r if isinstance(r, str) else type(r) for r in results] == [
        "a", "a", StreamDataError, "b", StreamDataError, "b"]
    assert "item 'bad'" in str(results[2])
    assert counted.calls == [1, 5]
