"""A store's first connection to a SQLite file another process is writing in rollback-journal mode (as
``iii-streams migrate`` leaves it while it runs) waits for the lock, as every other SQLite wait does: the switch to
WAL is answered "database is locked" at once, without SQLite's busy wait, and the store's first operation failed
within 3 ms saying SQLite had stayed locked (3 of 84 stores started beside migrations in an attack)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream

pytestmark = pytest.mark.timeout(30)


async def test_the_first_write_waits_for_another_writers_lock_on_a_rollback_journal_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False)) as other:
        other.execute("CREATE TABLE other (a)")  # a rollback-journal file, written by another program
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO other VALUES (1)")
        released = threading.Event()

        def release() -> None:
            other.execute("COMMIT")
            released.set()

        timer = threading.Timer(0.5, release)
        timer.start()
        try:
            started = time.monotonic()
            async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
                took = time.monotonic() - started
                assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1
        finally:
            timer.join()
    assert released.is_set()
    assert took >= 0.4, took  # it waited for the other writer's commit
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
