"""Attack A-St on ``iii-streams migrate``: several processes migrate one fresh database at once (replicas that all
run the migration as they start). Before, the losers failed: on PostgreSQL with "duplicate key value violates
unique constraint pg_type_typname_nsp_index", on SQLite with "table … already exists" (the driver ran CREATE TABLE
outside any transaction). Now the migrations run one after the other (a PostgreSQL advisory lock; BEGIN IMMEDIATE
on SQLite): exactly one migrates, the others find the schema done, and all succeed. Real processes, real servers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres

PROCESSES = 4


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    with scratch_database(require_postgres(), migrated=False) as url:
        yield url


async def _migrate_at_once(url: str) -> list[tuple[int, str]]:
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "iii_streams", "migrate", url,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
             for _ in range(PROCESSES)]
    async with asyncio.timeout(25):
        outputs = [(await proc.communicate())[0].decode() for proc in procs]
    return [(proc.returncode or 0, out) for proc, out in zip(procs, outputs, strict=True)]


def _check(results: list[tuple[int, str]]) -> None:
    assert [code for code, _ in results] == [0] * PROCESSES, results
    migrated = [out for _, out in results if "from none to 0001_stream_items" in out]
    assert len(migrated) == 1, results
    assert sum("is already at 0001_stream_items" in out for _, out in results) == PROCESSES - 1, results


async def test_concurrent_postgresql_migrations_all_succeed(fresh_pg_url: str) -> None:
    _check(await _migrate_at_once(fresh_pg_url))


async def test_concurrent_sqlite_migrations_all_succeed(tmp_path: Path) -> None:
    _check(await _migrate_at_once(f"sqlite:///{tmp_path / 'streams.db'}"))
