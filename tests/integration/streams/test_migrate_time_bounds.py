"""Migrations and revision reads are bounded in time: a server that accepts a connection and never answers, or
another migration holding the database's migration lock, ends ``iii-streams migrate`` / ``current`` and
``iii_streams.migrate.upgrade`` with one clear failure naming the database, instead of waiting for good.

Before: ``current`` against a silent listener waited for asyncpg's connect bound (60 s), and a migration waiting
for the lock (or on a server gone silent after the connect) waited forever, its engine's dispose too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from iii_streams import migrate as migrate_module
from iii_streams.deadlines import let_go_count
from tests.integration.streams.pg_database import scratch_database
from tests.integration.streams.test_streams_cli_trust import one_error_line, streams_cli
from tests.polling import until
from tests.services import require_postgres
from tests.stall_relay import Relay

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def blank_db() -> Iterator[str]:
    """A fresh PostgreSQL database, never migrated."""
    with scratch_database(require_postgres(), migrated=False) as url:
        yield url


async def _hold_migration_lock(url: str) -> asyncpg.Connection:
    """A connection holding the database's migration lock, as a migration still running elsewhere does."""
    holder = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    await holder.execute("BEGIN")
    await holder.execute("SELECT pg_advisory_xact_lock($1)", migrate_module._MIGRATION_LOCK)
    return holder


def test_current_against_a_silent_server_ends_at_its_timeout(silent_port: int) -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{silent_port}/db"
    started = time.monotonic()
    line = one_error_line(streams_cli("current", url, "--timeout", "1"), 1)
    assert time.monotonic() - started < 15
    assert line == (f"iii-streams: current: postgresql://app:***@127.0.0.1:{silent_port}/db gave no answer within "
                    "1 s; --timeout SECONDS sets the limit")


@pytest.mark.parametrize("value", ["0", "-1", "soon", "100000"])
def test_a_bad_timeout_is_a_usage_error(value: str) -> None:
    line = one_error_line(streams_cli("migrate", "sqlite://", "--timeout", value), 2)
    assert line.startswith("iii-streams: argument --timeout: "), line


def test_the_default_timeout_in_the_help_is_the_one_used() -> None:
    help_text = subprocess.run([sys.executable, "-m", "iii_streams", "migrate", "--help"], capture_output=True,
                               text=True, timeout=25).stdout
    assert f"(default: {migrate_module.MIGRATE_TIMEOUT_S:g})" in " ".join(help_text.split())


async def test_a_migration_waiting_for_another_gives_up_and_commits_nothing(blank_db: str) -> None:
    holder = await _hold_migration_lock(blank_db)
    try:
        started = time.monotonic()
        proc = await asyncio.to_thread(streams_cli, "migrate", blank_db, "--timeout", "1")
        assert time.monotonic() - started < 15
        line = one_error_line(proc, 1)
        assert line.endswith("gave no answer within 1 s (or another migration of it is still running); "
                             "--timeout SECONDS sets the limit"), line
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    assert await migrate_module.upgrade(blank_db, timeout=10) == (None, migrate_module.head_revision())


async def test_upgrade_on_a_server_gone_silent_mid_migration_ends_at_its_timeout(blank_db: str,
                                                                               pg_relay: Relay) -> None:
    holder = await _hold_migration_lock(blank_db)
    through_relay = make_url(blank_db).set(port=pg_relay.port).render_as_string(False)
    try:
        upgrade = asyncio.ensure_future(migrate_module.upgrade(through_relay, timeout=1.5))
        await until(lambda: len(pg_relay.transports) == 2)  # connected: the migration now waits for the lock
        pg_relay.blackhole()  # and the server goes silent: neither the cancel nor the rollback will be answered
        started = time.monotonic()
        with pytest.raises(TimeoutError) as raised:
            async with asyncio.timeout(10):  # before: waited for good
                await upgrade
        assert time.monotonic() - started < 6  # its 1.5 s, then at most two dispose bounds of 2 s
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    assert str(raised.value) == f"database {make_url(through_relay).render_as_string(True)} gave no result within " \
                                "1.5 s"
    await until(lambda: let_go_count() == 0)  # the cut ended the let-go migration: nothing left running
    assert await migrate_module.upgrade(blank_db, timeout=10) == (None, migrate_module.head_revision())


async def test_a_sqlite_migration_waiting_for_a_lock_gives_up_and_leaves_nothing_running(tmp_path: Path) -> None:
    # before: the timed-out migration's task stayed for good in the rollback of a connection it could not cut (the
    # SQLite driver's thread), holding this process's migration turn: every later migration timed out, and opening
    # another store hung
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's writer
    url = f"sqlite+aiosqlite:///{path}"
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"gave no result within 1 s$"):
            await migrate_module.upgrade(url, timeout=1)
        assert time.monotonic() - started < 5
    finally:
        holder.rollback()
        holder.close()
    assert let_go_count() == 0 and not migrate_module._ALEMBIC_TURN.locked()
    assert await migrate_module.upgrade(url, timeout=10) == (None, migrate_module.head_revision())


def test_a_tiny_timeout_on_a_new_sqlite_file_ends_with_one_line(tmp_path: Path) -> None:
    # before: 4 runs in 6 hung for good in asyncio.run's clean-up, waiting on the driver's uncut connection
    for attempt in range(3):
        proc = streams_cli("migrate", f"sqlite:///{tmp_path / f'new-{attempt}.db'}", "--timeout", "0.001")
        assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)
        assert len(proc.stderr.splitlines()) == (proc.returncode == 1), proc.stderr


async def test_a_postgres_session_left_waiting_ends_by_itself(blank_db: str) -> None:
    # before: each timed-out migration left a backend waiting for the lock until its holder let go
    holder = await _hold_migration_lock(blank_db)
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
             "AND pid <> pg_backend_pid()")
    try:
        with pytest.raises(TimeoutError):
            await migrate_module.upgrade(blank_db, timeout=0.5)
        async with asyncio.timeout(10):
            while await holder.fetchval(query) > 0:  # noqa: ASYNC110 - the server tells no one of a wait
                await asyncio.sleep(0.05)
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()


@pytest.mark.parametrize("bound", [0, -1, float("nan"), float("inf")])
async def test_a_timeout_that_bounds_nothing_is_refused(bound: float) -> None:
    # before: nan meant no bound at all, and 0 or a negative number failed as if the database had not answered
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds or None"):
        await migrate_module.upgrade("sqlite+aiosqlite://", timeout=bound)


async def test_the_bound_is_set_in_the_transaction_not_at_connect(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: lock_timeout and co. went as start-up parameters, which PgBouncer refuses ("unsupported startup
    # parameter: lock_timeout"): every bounded migration or revision read through it failed
    import asyncpg as driver

    connects: list[dict[str, object]] = []
    real_connect = driver.connect

    async def recording_connect(*args: object, **kwargs: object) -> object:
        connects.append(kwargs)
        return await real_connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(driver, "connect", recording_connect)
    assert await migrate_module.revision_of(pg_url, timeout=3e6) == migrate_module.head_revision()  # 3e6 s: capped
    assert connects and all("server_settings" not in kwargs for kwargs in connects), connects
