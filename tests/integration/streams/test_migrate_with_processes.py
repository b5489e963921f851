"""``migrate_with`` on a caller's own SQLite engine (the driver's default transaction handling, no hooks of ours),
from several processes at once on one fresh file. Before, the driver ran the migration's CREATE TABLE outside any
transaction: the processes that lost the race failed with "table ... already exists". Now the migration takes the
database's write lock (BEGIN IMMEDIATE) before it reads the version: one migrates, the others find it done."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

PROCESSES = 4

SCRIPT = """
import asyncio, sys
from sqlalchemy.ext.asyncio import create_async_engine
from iii_streams.migrate import migrate_with

async def main() -> None:
    engine = create_async_engine("sqlite+aiosqlite:///" + sys.argv[1])
    try:
        print(await migrate_with(engine))
    finally:
        await engine.dispose()

asyncio.run(main())
"""


async def test_migrate_with_a_plain_sqlite_engine_from_processes_at_once(tmp_path: Path) -> None:
    for attempt in range(3):  # the race is narrow: a fresh file each time, every attempt must succeed
        db = tmp_path / f"streams-{attempt}.db"
        procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", SCRIPT, str(db),
                                                      stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.STDOUT)
                 for _ in range(PROCESSES)]
        async with asyncio.timeout(25):
            outputs = [(await proc.communicate())[0].decode() for proc in procs]
        results = [(proc.returncode, out.strip().splitlines()[-1:]) for proc, out in zip(procs, outputs, strict=True)]
        assert results == [(0, ["0001_stream_items"])] * PROCESSES, outputs


async def test_the_driver_reports_its_transaction_state() -> None:
    # The lock above is taken only when the driver says no transaction is open: a driver that stopped saying would
    # silently bring the race back, so its answer is pinned here.
    from sqlalchemy.ext.asyncio import create_async_engine

    from iii_streams.migrate import _driver_in_transaction

    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_driver_in_transaction) is False
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            assert await conn.run_sync(_driver_in_transaction) is True
    finally:
        await engine.dispose()
