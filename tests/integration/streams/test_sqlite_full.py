"""A SQLite database with no room left (SQLITE_FULL: a full disk, or its ``max_page_count`` reached) refuses the
write with ``StreamBackendError`` naming the database; it said ``StreamUnavailableError … database unreachable``,
though the database had answered."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from iii.stream import StreamSetInput
from iii_streams import SQLStream, StreamBackendError

pytestmark = pytest.mark.timeout(30)


async def _filled(store: SQLStream, pages_left: int) -> None:
    """Every connection ``store`` makes from now on finds the file with room for ``pages_left`` more pages."""
    def no_room(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA page_count")
        cursor.execute(f"PRAGMA max_page_count = {cursor.fetchone()[0] + pages_left}")
        cursor.close()

    event.listen(store.engine.sync_engine, "connect", no_room)
    await store.engine.dispose()  # the next connection is made with the hook


async def test_a_full_database_refuses_the_write(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="small", data=1))

        await _filled(store, 0)  # what a full disk does: no page more
        with pytest.raises(StreamBackendError) as failure:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="big", data="x" * 1_000_000))
    assert "the database refused the write" in str(failure.value), str(failure.value)
    assert "database or disk is full" in str(failure.value) and str(path) in str(failure.value)


async def test_writes_whose_batch_the_full_database_refused_say_not_applied(tmp_path: Path) -> None:
    """A batch refused before its commit applied nothing, and each of its writes says so (``applied`` False): before,
    every one said "may have been applied" (1,088 of 1,088 in an attack, none of them in the file)."""
    path = tmp_path / "full.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="small", data=1))

        await _filled(store, 4)  # a few small writes fit

        async def put(n: int) -> StreamBackendError | None:
            try:
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=f"i{n}", data="x" * 3000))
            except StreamBackendError as exc:
                return exc
            return None

        outcomes = await asyncio.gather(*(put(n) for n in range(64)))
    with closing(sqlite3.connect(path)) as db:  # what the file holds, read apart from the store
        stored = {row[0] for row in db.execute("SELECT item_id FROM iii_stream_items WHERE group_id = 'g'")}
    refused = {f"i{n}": exc for n, exc in enumerate(outcomes) if exc is not None}
    assert refused, "the database never filled up"
    assert all(f"i{n}" in stored for n, exc in enumerate(outcomes) if exc is None)  # acknowledged: kept
    not_applied = {item for item, exc in refused.items() if exc.applied is False}
    assert not_applied, {exc.applied for exc in refused.values()}
    assert not not_applied & stored
    assert all("the write was not sent and not applied" in str(refused[item]) for item in not_applied)
