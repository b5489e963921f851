"""SQLite connections closed in the awkward ways a cancel leaves them in let go of the file's locks, and their close
returns (``iii_streams.sqlite_threads.guard_aiosqlite``).

A connection SQLAlchemy both cuts (aiosqlite's ``stop()``) and closes (``close()``), as it does when a cancel
interrupts its graceful close (an operation timing out inside a store's migration), is closed once and the close
returns. With aiosqlite 0.22 unguarded, a close after a stop its thread had not yet run let go of the sqlite3
connection (left open, holding its write lock: the next store on the file waited out the 30 s busy wait) and waited
for a second stop its ended thread never answered (the store's close hung). And a connection closed while a read of
its write transaction was unfinished (cancelled between its first row and the rest) kept the lock until that
statement was freed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from iii_streams.sqlite_threads import guard_aiosqlite

pytestmark = pytest.mark.timeout(30)
needs_stop = pytest.mark.skipif(not hasattr(aiosqlite.Connection, "stop"),
                                reason="aiosqlite before 0.22 has no stop(): SQLAlchemy never cuts its connections")

# keeps the connection's thread busy a while, so the stop and the close below are both queued behind it
_SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
         "SELECT count(*) FROM c")


async def _lock_is_free(path: Path) -> None:
    async with aiosqlite.connect(path, timeout=0.2) as other:
        # "database is locked" while a closed connection still held its lock: the write one at BEGIN IMMEDIATE, a
        # read one at the COMMIT (a file in SQLite's default journal mode)
        await other.execute("BEGIN IMMEDIATE")
        await other.execute("CREATE TABLE IF NOT EXISTS probe (x)")
        await other.commit()


@contextlib.asynccontextmanager
async def _guarded_driver(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """The aiosqlite connection behind one connection of a guarded engine on ``path``, closed by the test."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.2})
    guard_aiosqlite(engine)
    try:
        connection = await engine.connect()
        driver = (await connection.get_raw_connection()).driver_connection
        assert isinstance(driver, aiosqlite.Connection)
        yield driver
        await connection.invalidate()  # (SQLAlchemy's own connection is gone)
        await connection.close()
    finally:
        await engine.dispose()


@needs_stop
@pytest.mark.parametrize("close_first", [False, True], ids=["stop-then-close", "close-then-stop"])
async def test_a_cut_and_closed_connection_is_closed_once_and_lets_go_of_its_lock(
        tmp_path: Path, close_first: bool) -> None:
    async with _guarded_driver(tmp_path / "s.db") as driver:
        holds_lock = await driver.execute("BEGIN IMMEDIATE")  # kept, as SQLAlchemy's cursors keep theirs
        slow = asyncio.ensure_future(driver.execute_fetchall(_SLOW))
        await asyncio.sleep(0)  # one turn: the task queues its statement, which the thread starts at once
        if close_first:
            closed = asyncio.ensure_future(driver.close())
            await asyncio.sleep(0)  # the close queues its statement
            driver.stop()
        else:
            driver.stop()
            closed = asyncio.ensure_future(driver.close())
        done, _ = await asyncio.wait((closed,), timeout=10)
        assert done, "the close never returned"
        closed.result()
        assert list(await slow) == [(2000000,)]
        assert holds_lock is not None
    await _lock_is_free(tmp_path / "s.db")


@pytest.mark.parametrize("in_transaction", [True, False], ids=["write-transaction", "autocommit-read"])
async def test_a_connection_closed_with_a_read_unfinished_lets_go_of_its_lock(
        tmp_path: Path, in_transaction: bool) -> None:
    async with _guarded_driver(tmp_path / "s.db") as driver:
        await driver.execute("CREATE TABLE t (x)")
        await driver.execute("INSERT INTO t VALUES (1), (2), (3)")
        await driver.commit()
        if in_transaction:
            await driver.execute("BEGIN IMMEDIATE")
        unfinished = await driver.execute("SELECT x FROM t")
        assert await unfinished.fetchone() == (1,)  # one row of three: the statement is not done
        await driver.close()
        await _lock_is_free(tmp_path / "s.db")  # (the unfinished cursor still referenced)
        del unfinished


@needs_stop
async def test_a_close_after_a_cancelled_close_returns_and_is_not_cancelled(tmp_path: Path) -> None:
    """A close cancelled while it waited for the stop cancels that stop's future; a later close by a caller nobody
    cancelled returns (the thread still closes the connection), rather than raising that cancel as its own."""
    async with _guarded_driver(tmp_path / "s.db") as driver:
        slow = asyncio.ensure_future(driver.execute_fetchall(_SLOW))
        await asyncio.sleep(0)  # one turn: the task queues its statement
        first = asyncio.ensure_future(driver.close())
        await asyncio.sleep(0)  # the first close queues the connection's close behind the statement
        first.cancel()
        await asyncio.sleep(0)  # it takes the cancel, and then waits for the stop it queued as it ends
        first.cancel()  # which cancels that stop's future itself
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await asyncio.wait_for(driver.close(), 10)  # before: CancelledError
        # (aiosqlite's cancelled close let go of the connection at once: a statement its thread had not begun yet
        # finds none, which is aiosqlite's way, not what this test is about)
        with contextlib.suppress(ValueError):
            await slow
    await _lock_is_free(tmp_path / "s.db")


@pytest.mark.parametrize("connected_first", [True, False], ids=["connected-first", "fresh"])
async def test_an_engine_that_connected_before_it_was_guarded_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, connected_first: bool) -> None:
    """Its connections made before stay unguarded (replacing them at checkout lost per-connection state and hung a
    shared StaticPool): the one warning says how to guard them all."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    # SQLAlchemy 2.0.0 (the floor) pools no aiosqlite file connection (NullPool): none outlives its use to warn of
    pools = hasattr(engine.sync_engine.pool, "checkedin")
    try:
        if connected_first:
            async with engine.connect() as first, engine.connect() as second:
                await first.exec_driver_sql("SELECT 1")
                await second.exec_driver_sql("SELECT 1")
        guard_aiosqlite(engine)
        guard_aiosqlite(engine)  # (idempotent: said once)
    finally:
        await engine.dispose()
    said = [r.getMessage() for r in caplog.records if "before iii_streams guarded it" in r.getMessage()]
    assert said == ([f"SQLite engine sqlite+aiosqlite:///{tmp_path / 's.db'} had 2 connection(s) before iii_streams "
                     "guarded it: those stay unguarded (a cancel may hang their close or leave the file locked); call "
                     "iii_streams.sqlite_threads.guard_aiosqlite(engine) right after create_async_engine"]
                    if connected_first and pools else [])
