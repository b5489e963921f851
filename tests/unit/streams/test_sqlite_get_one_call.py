"""A SQLite store's ``get`` reads the item in one call to the connection's aiosqlite thread (``execute_fetchall``),
not SQLAlchemy's four (cursor, execute, fetch, close). What it must keep from going through SQLAlchemy: the same
values, the same errors (a dropped table named with the command that makes it), and a connection whose driver
thread ended is let go, not handed out again."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput
from iii_streams.errors import SchemaMissingError, StreamError
from iii_streams.schema import TABLE_NAME, item_key
from iii_streams.sql import SQLStream


def _get(item: str) -> StreamGetInput:
    return StreamGetInput(stream_name="s", group_id="g", item_id=item)


async def test_values_and_missing_items_read_as_before(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as store:
        value = {"big": 2**70, "text": "é\u2028𝄞", "none": None, "list": [1.5, True]}
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=value))
        assert await store.get(_get("i")) == value
        assert await store.get(_get("missing")) is None


async def test_a_dropped_table_is_named_with_its_command(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        with sqlite3.connect(path) as conn:
            conn.execute(f"DROP TABLE {TABLE_NAME}")
        conn.close()
        with pytest.raises(SchemaMissingError, match="iii-streams migrate"):
            await store.get(_get("i"))


async def test_a_connection_whose_thread_ended_is_not_handed_out_again(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as store:
        drivers: list[Any] = []
        event.listen(store.engine.sync_engine, "connect",
                     lambda dbapi, _record: drivers.append(dbapi.driver_connection))
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=7))
        assert await store.get(_get("i")) == 7
        assert drivers, "no connection was made after the listener"
        for driver in drivers:
            await driver.close()  # its thread ends; the pool still holds the connection
        made = len(drivers)
        with pytest.raises(StreamError):
            await store.get(_get("i"))
        # the next get gets a new connection, not the dead one again
        assert await store.get(_get("i")) == 7
        assert await store.get(_get("i")) == 7
        assert len(drivers) > made


async def test_a_connection_given_back_in_a_transaction_is_rolled_back(tmp_path: Path) -> None:
    """The store's own SQLite engine rolls back a connection given back only when a transaction is open on it (the
    pool's rollback of every connection was one more trip to its thread per operation): one left open is still
    rolled back, so its write lock does not stay held in the pool."""
    path = tmp_path / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        async with store.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            await driver.execute("BEGIN IMMEDIATE")  # behind SQLAlchemy's back: only the pool's reset can end it
            assert driver.in_transaction
        assert not driver.in_transaction
        other = sqlite3.connect(path, timeout=0.2)
        try:
            other.execute(f"UPDATE {TABLE_NAME} SET value = '2'")  # "database is locked" if the lock were held
            other.commit()
        finally:
            other.close()
        assert await store.get(_get("i")) == 2


async def test_a_failed_read_leaves_no_old_snapshot_behind(tmp_path: Path) -> None:
    """aiosqlite does not close the cursor of a fetch that failed: its statement kept the connection's read snapshot,
    so that connection's later reads returned old data, its writes found the database locked and checkpoints stayed
    busy (59 of 59 reads stale over 3 s in an attack). The connection is let go and the cursor freed now."""
    path = tmp_path / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"v": 1}))
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="bad", data=0))
        other = sqlite3.connect(path, isolation_level=None, timeout=0.2)
        try:
            # another program writes text that is not UTF-8: reading it fails in the fetch
            other.execute(f"UPDATE {TABLE_NAME} SET value = CAST(X'7B2276223A22FF227D' AS TEXT) WHERE item_key = ?",
                          (item_key("s", "g", "bad"),))
            with pytest.raises(StreamError, match="UTF-8"):
                await store.get(_get("bad"))
            with pytest.raises(StreamError, match="UTF-8") as caught:  # (a write's transaction reads it too)
                await store.delete(StreamDeleteInput(stream_name="s", group_id="g", item_id="bad"))
            assert "connection was lost" not in str(caught.value)  # it was not (said since the reads went direct)
            other.execute(f"UPDATE {TABLE_NAME} SET value = '{{\"v\":2}}' WHERE item_key = ?",
                          (item_key("s", "g", "i"),))
            assert await store.get(_get("i")) == {"v": 2}  # before: {"v": 1}, for as long as the cursor lived
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"v": 3}))
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        finally:
            other.close()
        assert await store.get(_get("i")) == {"v": 3}

