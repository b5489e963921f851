"""``SQLStream.prepare()`` on a SQLite file another process holds locked (``BEGIN EXCLUSIVE``).

Before: the store's open waited for the lock in aiosqlite's thread for SQLite's busy timeout (30 s), deaf to the
prepare's bound, then said "no answer within N s": neither the bound nor the cause was true. Now the prepare ends
within its bound and names the lock; a lock let go within the bound is waited for.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SQLStream

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process's writer would) holding an exclusive lock on ``tmp_path/s.db``."""
    connection = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield connection
    finally:
        if connection.in_transaction:
            connection.rollback()
        connection.close()


@pytest.mark.parametrize("create", [True, False])
async def test_a_locked_file_fails_the_prepare_within_its_bound_naming_the_lock(
        tmp_path: Path, holder: sqlite3.Connection, create: bool) -> None:
    path = tmp_path / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=create) as store:
        began = time.monotonic()
        with pytest.raises(StreamUnavailableError) as failure:
            await store.prepare(timeout=0.5)
        took = time.monotonic() - began
    assert took < 2, took  # before: 30 s (SQLite's busy timeout in the driver's thread)
    assert str(failure.value) == (f"cannot open SQLite database {path}: locked by another process or writer, "
                                  "no answer within 0.5 s (database is locked)")


async def test_a_lock_let_go_within_the_bound_is_waited_for(tmp_path: Path, holder: sqlite3.Connection) -> None:
    path = tmp_path / "s.db"
    asyncio.get_running_loop().call_later(0.3, holder.rollback)  # the other writer commits 0.3 s in
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        await store.prepare(timeout=5)
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1
