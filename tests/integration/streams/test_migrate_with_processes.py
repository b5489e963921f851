"""``migrate_with`` on a caller's own SQLite engine (the driver's default transaction handling, no hooks of ours),
from several processes at once on one fresh file. Before, the driver ran the migration's CREATE TABLE outside any
transaction: the processes that lost the race failed with "table ... already exists". Now the migration takes the
database's write lock (BEGIN IMMEDIATE) before it reads the version: one migrates, the others find it done."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

PROCESSES = 4

ATTEMPTS = 3  # the race is narrow: a fresh file each time, every attempt must succeed

# One process per racer, started once (each start imports SQLAlchemy: 12 starts took ~23 s of the test's 30 s on a
# loaded machine); each attempt starts when the test sends every process the next file's path at once.
SCRIPT = """
import asyncio, sys
from sqlalchemy.ext.asyncio import create_async_engine
from iii_streams.migrate import migrate_with

async def migrate(path: str) -> str:
    engine = create_async_engine("sqlite+aiosqlite:///" + path)
    try:
        return str(await migrate_with(engine))
    finally:
        await engine.dispose()

print("ready", flush=True)
for line in sys.stdin:
    try:
        print(asyncio.run(migrate(line.strip())), flush=True)
    except Exception as exc:
        print(f"failed: {exc!r}", flush=True)
"""


async def test_migrate_with_a_plain_sqlite_engine_from_processes_at_once(tmp_path: Path) -> None:
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", SCRIPT, stdin=asyncio.subprocess.PIPE,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
             for _ in range(PROCESSES)]
    try:
        async with asyncio.timeout(25):
            assert [await _line(proc) for proc in procs] == ["ready"] * PROCESSES
            for attempt in range(ATTEMPTS):
                db = tmp_path / f"streams-{attempt}.db"
                for proc in procs:
                    assert proc.stdin is not None
                    proc.stdin.write(f"{db}\n".encode())
                await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin is not None))
                results = [await _line(proc) for proc in procs]
                assert results == ["0001_stream_items"] * PROCESSES, (attempt, results)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.close()
            assert [await proc.wait() for proc in procs] == [0] * PROCESSES
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await proc.stdout.readline()).decode().strip()


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
