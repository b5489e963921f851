"""SQLStream against a real PostgreSQL: a database created for this run (``iii_test_<random>``), migrated with
``iii-streams migrate``, the conformance suite, LISTEN/NOTIFY, and dropped afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import event

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import SQLStream
from iii_streams.sql import SchemaMissingError
from iii_streams.testing import StreamConformance
from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server() -> str:
    return require_postgres()


@pytest.fixture(scope="module")
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh database for this module, migrated through the command-line tool, dropped at the end."""
    with scratch_database(pg_server) as url:
        yield url


class TestPostgresStream(StreamConformance):
    @pytest.fixture
    def stream_url(self, pg_url: str) -> str:
        return pg_url

    @pytest.fixture
    async def stream(self, pg_url: str) -> AsyncIterator[SQLStream]:
        async with SQLStream.from_url(pg_url, pool_size=10) as store:
            yield store


async def test_watch_sees_writes_from_another_store(pg_url: str) -> None:
    stream_name = f"cross-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as watcher, SQLStream.from_url(pg_url) as writer:
        async with watcher.watch(stream_name=stream_name) as events:
            await writer.set(StreamSetInput(stream_name=stream_name, group_id="g", item_id="1", data={"a": 1}))
            event = await asyncio.wait_for(anext(events), 10)
    assert event["event"] == {"type": "create", "data": {"a": 1}}


def test_unmigrated_database_names_the_fix(pg_server: str) -> None:
    async def probe(url: str) -> None:
        async with SQLStream.from_url(url) as store:
            with pytest.raises(SchemaMissingError, match="iii-streams migrate"):
                await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))

    with scratch_database(pg_server, migrated=False) as url:
        asyncio.run(probe(url))


def _count_statements(store: SQLStream) -> list[str]:
    seen: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_writes_to_an_item_this_store_knows_take_one_statement(pg_url: str) -> None:
    """After its first write of an item, a store writes it with one compare-and-set statement (no BEGIN/SELECT
    FOR UPDATE/UPDATE/NOTIFY/COMMIT round trips), and its events still reach every watcher."""
    name = f"swap-{uuid.uuid4().hex[:8]}"
    inc = StreamUpdateInput(stream_name=name, group_id="g", item_id="c", ops=[UpdateIncrement(path="n", by=1)])
    async with SQLStream.from_url(pg_url) as watcher, SQLStream.from_url(pg_url) as store:
        async with watcher.watch(stream_name=name) as events:
            await store.update(inc)  # creates the row: the locking transaction
            statements = _count_statements(store)
            results = [await store.update(inc) for _ in range(3)]
            seen = [await asyncio.wait_for(anext(events), 10) for _ in range(4)]
    assert statements == ["WITH"] * 3
    assert [(r.old_value, r.new_value) for r in results] == [({"n": i}, {"n": i + 1}) for i in (1, 2, 3)]
    assert [e["event"] for e in seen] == [{"type": "create", "data": {"n": 1}}] + [
        {"type": "update", "data": {"n": i}} for i in (2, 3, 4)]
    assert store.swap_misses == 0


async def test_a_write_by_another_store_sends_the_next_write_through_the_lock(pg_url: str) -> None:
    """A store whose remembered value is stale (another process wrote the item) changes nothing with its
    one-statement attempt, sends no event for it, and applies the write on the current value instead."""
    name = f"stale-{uuid.uuid4().hex[:8]}"
    inc = StreamUpdateInput(stream_name=name, group_id="g", item_id="c", ops=[UpdateIncrement(path="n", by=1)])
    async with (SQLStream.from_url(pg_url) as watcher, SQLStream.from_url(pg_url) as a,
                SQLStream.from_url(pg_url) as b):
        async with watcher.watch(stream_name=name) as events:
            await a.update(inc)
            await b.set(StreamSetInput(stream_name=name, group_id="g", item_id="c", data={"n": 10, "by": "b"}))
            result = await a.update(inc)
            again = await a.update(inc)  # backing off: the locking transaction, still correct
            seen = [await asyncio.wait_for(anext(events), 10) for _ in range(4)]
            await a.set(StreamSetInput(stream_name=name, group_id="g", item_id="marker", data=0))
            marker = await asyncio.wait_for(anext(events), 10)
        final = await b.get(StreamGetInput(stream_name=name, group_id="g", item_id="c"))
    assert (result.old_value, result.new_value) == ({"n": 10, "by": "b"}, {"n": 11, "by": "b"})
    assert again.new_value == {"n": 12, "by": "b"}
    assert final == {"n": 12, "by": "b"}
    assert a.swap_misses == 1
    assert [e["event"]["data"] for e in seen] == [{"n": 1}, {"n": 10, "by": "b"}, {"n": 11, "by": "b"},
                                                  {"n": 12, "by": "b"}]
    assert marker["id"] == "marker"  # nothing else (no event of the failed attempt) came in between
