"""The holes an attack found in SQLStream's check of its SQLite file (after the check for a deleted or replaced file):
a file gone while the store opened it left the store unchecked for good; a deleted ``-wal`` (every write since the
last checkpoint: a crash lost 40 of 40; not detected after all, see below), a truncated file and a ``file:`` URI
were not noticed; a symlinked path was checked at the link; a replaced file's
``-wal`` was applied over the file put at the path by its next open; and a renamed file's write was called lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError
from tests.integration.streams.sqlite_statements import before_statements

pytestmark = pytest.mark.timeout(30)


def _set(item: str, data: object) -> StreamSetInput:
    return StreamSetInput(stream_name="s", group_id="g", item_id=item, data=data)


def _items(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT item_id FROM iii_stream_items ORDER BY 1")]


@pytest.mark.parametrize("create", [True, False])
async def test_a_file_deleted_while_the_store_opens_it_fails(tmp_path: Path, create: bool) -> None:
    path = tmp_path / "opening.db"
    if not create:  # an existing store's file
        async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as first:
            await first.set(_set("old", 0))
    store = SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=create)
    deleted: list[bool] = []

    @event.listens_for(store.engine.sync_engine, "checkin")
    def _delete_once(*_args: Any) -> None:
        if not deleted:  # the opening's connection given back, before the store notes its file
            os.unlink(path)
            deleted.append(True)

    async with store:
        for item in ("a", "b"):
            with pytest.raises(StreamBackendError) as caught:
                await store.set(_set(item, 1))
            assert f"the database file {path} was deleted or replaced while the store was open" in str(caught.value)
            assert caught.value.applied is False
        with pytest.raises(StreamBackendError, match="deleted or replaced"):
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="a"))
    assert deleted and not path.exists()


async def test_a_deleted_wal_is_not_taken_for_a_loss_and_the_close_keeps_its_writes(tmp_path: Path) -> None:
    """SQLite itself deletes the -wal at the last connection's close and makes another at the next open, which a pool
    without kept connections does all the time: a -wal gone under the store is noted afresh, never a failure (a
    check that failed on it failed healthy NullPool stores for good); a -wal deleted by hand keeps its writes in
    the store's connections, and the close moves them into the file."""
    path = tmp_path / "wal.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        for n in range(5):
            await store.set(_set(f"a{n}", n))
        os.unlink(f"{path}-wal")
        await store.set(_set("b", 1))
    assert _items(path) == ["a0", "a1", "a2", "a3", "a4", "b"]


@pytest.mark.parametrize("pool", ["NullPool", "pool_recycle"])
async def test_a_healthy_store_whose_connections_come_and_go_never_fails(tmp_path: Path, pool: str) -> None:
    """Before: with NullPool (what SQLAlchemy 2.0.0 gives a caller's aiosqlite engine), a set loop beside a get loop
    failed the store for good ("the -wal file ... was deleted or replaced", 3 of 3 runs)."""
    path = tmp_path / "healthy.db"
    options: dict[str, Any] = {"poolclass": NullPool} if pool == "NullPool" else {"pool_recycle": 0.02}
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", **options) as store:
        done = asyncio.Event()

        async def writes() -> None:
            try:
                for n in range(150):
                    await store.set(_set(f"k{n}", n))
            finally:
                done.set()

        async def reads() -> None:
            while not done.is_set():
                await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="k0"))

        await asyncio.gather(writes(), reads())
    assert len(_items(path)) == 150


async def test_a_symlinked_path_is_checked_at_the_file_it_names(tmp_path: Path) -> None:
    """SQLite opens the symlink's target and keeps -wal and -shm beside it: the store checks that file, not the
    link (before, a restore replacing the target went unnoticed)."""
    (tmp_path / "real").mkdir()
    target, link = tmp_path / "real" / "s.db", tmp_path / "link.db"
    os.symlink(target, link)
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{link}") as store:
        await store.set(_set("mine", 1))
        os.replace(tmp_path / "real" / "s.db", tmp_path / "real" / "old.db")
        with contextlib.closing(sqlite3.connect(target)) as db:
            db.execute("CREATE TABLE x (y)")
        with pytest.raises(StreamBackendError, match=f"the database file {target} was deleted or replaced"):
            await store.set(_set("after", 1))


async def test_checkpoints_and_reconnects_keep_the_wal_check_quiet(tmp_path: Path) -> None:
    """SQLite deletes the -wal as the last connection closes and makes a new one at the next: not a loss."""
    path = tmp_path / "busy.db"
    wal = f"{path}-wal"
    inodes = set()
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            for n in range(600):
                await store.set(_set(f"i{n % 50}", "x" * 3000))  # ~1.8 MB of WAL: SQLite's own checkpoints too
                if n % 60 == 0:
                    # other connections' checkpoints of every mode, one truncating the -wal, keep its inode
                    mode = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")[n // 60 % 4]
                    other.execute(f"PRAGMA wal_checkpoint({mode})")
                if n % 150 == 75:
                    # every connection of the store closed (the other's too): SQLite deletes the -wal
                    inodes.add(os.stat(wal).st_ino)
                    other.close()
                    await store.engine.dispose()
                    with pytest.raises(FileNotFoundError):
                        os.stat(wal)
                    # a file taking the freed inode: the next -wal is told apart by its own
                    os.close(os.open(tmp_path / f"filler{n}", os.O_CREAT))
                    other = sqlite3.connect(path, isolation_level=None)
                if n % 100 == 0:  # concurrent reads: the pool grows past one connection and back
                    await asyncio.gather(*(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i1"))
                                           for _ in range(8)))
            inodes.add(os.stat(wal).st_ino)
    assert len(inodes) > 1  # the -wal was made again (a new inode), and that was not taken for a loss
    assert len(_items(path)) == 50


async def test_a_truncated_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "truncated.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        for n in range(30):
            await store.set(_set(f"a{n}", "x" * 2000))
        with contextlib.closing(sqlite3.connect(path)) as other:
            other.execute("PRAGMA wal_checkpoint(PASSIVE)")
        os.truncate(path, 0)
        with pytest.raises(StreamBackendError) as caught:
            await store.set(_set("b", 1))
        assert f"the database file {path} was truncated while the store was open (0 bytes now" in str(caught.value)
        with pytest.raises(StreamBackendError, match="was truncated"):
            await store.list(StreamListInput(stream_name="s", group_id="g"))


async def test_a_file_uri_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "my uri.db"
    url = f"sqlite+aiosqlite:///file:{str(path).replace(' ', '%20')}?uri=true"
    async with SQLStream.from_url(url) as store:
        await store.set(_set("a", 1))
        assert path.exists()  # (the %20 decoded: the URI names this file)
        os.unlink(path)
        with pytest.raises(StreamBackendError, match=f"the database file {path} was deleted or replaced"):
            await store.set(_set("b", 1))


async def test_a_replaced_file_does_not_get_the_old_wal(tmp_path: Path) -> None:
    path, restore = tmp_path / "s.db", tmp_path / "restore.db"
    with contextlib.closing(sqlite3.connect(restore)) as db:
        db.execute("CREATE TABLE iii_stream_items (item_id TEXT)")
        db.execute("INSERT INTO iii_stream_items VALUES ('restored')")
        db.commit()
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        for n in range(30):
            await store.set(_set(f"mine{n}", "x" * 500))
        os.replace(restore, path)
        with pytest.raises(StreamBackendError) as caught:
            await store.set(_set("after", 1))
    assert _items(path) == ["restored"]  # before: the 30 items of the old file's -wal, applied over it
    assert f"the writes of {path}-wal were moved into the file the store opened" in str(caught.value)


async def test_a_write_committed_to_a_renamed_file_is_not_called_lost(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path, moved = tmp_path / "s.db", tmp_path / "s.db.moved"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        await store.set(_set("first", 0))

        def _rename_first() -> None:
            if path.exists():
                os.rename(path, moved)  # after the check at the connection's checkout, before the commit

        before_statements(monkeypatch, "COMMIT", _rename_first)
        with pytest.raises(StreamBackendError) as caught:
            await store.set(_set("second", 1))  # (a new item: a transaction, which commits)
        text = str(caught.value)
        assert f"this write was committed to the file that was at {path} when the store opened it, which is no " \
               "longer there" in text
        assert "lost" not in text
        assert caught.value.applied is True
    assert _items(moved) == ["first", "second"]  # in the renamed file itself: its -wal was moved into it
