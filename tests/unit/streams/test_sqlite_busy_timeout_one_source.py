"""A SQLite store's connections and those of a migration run by ``iii_streams.migrate`` wait the same time for
another's lock (``PRAGMA busy_timeout``), set from one constant, ``iii_streams.migrate.SQLITE_BUSY_S``.

Before: the store's was ``_SQLITE_BUSY_S`` in ``iii_streams.sql`` and the migration's a literal 30000 in
``migrate.py``, free to drift apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from iii_streams import migrate
from iii_streams.sql import SQLStream

pytestmark = pytest.mark.timeout(30)


async def _busy_ms(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        value: int = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        return value


async def test_the_store_and_a_migration_wait_the_same_time_for_a_lock(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    migration_engine = create_async_engine(url)
    migrate._lock_sqlite_writes(migration_engine)  # what migrate()/upgrade() install on their engine
    store = SQLStream.from_url(url)
    try:
        expected = int(migrate.SQLITE_BUSY_S * 1000)
        assert await _busy_ms(migration_engine) == expected
        assert await _busy_ms(store.engine) == expected
    finally:
        await store.aclose()
        await migration_engine.dispose()
