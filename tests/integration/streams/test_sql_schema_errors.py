"""A SQL store on a schema not as this version left it fails with a ``StreamError`` that says what is wrong.

Before (attack on the SQL store): Alembic's own ``CommandError`` escaped every operation of a store with ``create``
when the version table held two rows; a stream table with an emptied version table was "database unreachable: table
iii_stream_items already exists"; a dropped column was "database unreachable" on SQLite."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError

pytestmark = pytest.mark.timeout(30)

ITEM = StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 1})


async def _migrated(path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(ITEM)


def _run(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


@pytest.mark.parametrize(("change", "said"), [
    (f"INSERT INTO iii_streams_alembic_version VALUES ('{'x' * 8}')", "must hold one row"),
    ("DELETE FROM iii_streams_alembic_version", "names no revision"),
])
async def test_a_version_table_that_names_no_single_revision_is_a_stream_error(
        tmp_path: Path, change: str, said: str) -> None:
    path = tmp_path / "s.db"
    await _migrated(path)
    _run(path, change)
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        with pytest.raises(StreamBackendError) as failure:
            await store.set(ITEM)
    assert said in str(failure.value) and "iii_streams_alembic_version" in str(failure.value), str(failure.value)
    assert "unreachable" not in str(failure.value)
    assert failure.value.applied is False  # nothing was sent to be committed


async def test_a_table_missing_a_column_is_named_a_schema_mismatch_not_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _migrated(path)
    _run(path, "ALTER TABLE iii_stream_items DROP COLUMN value")
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        with pytest.raises(StreamBackendError) as failure:
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    assert "does not match this version's schema" in str(failure.value), str(failure.value)
    assert "no such column" in str(failure.value) and str(path) in str(failure.value)
