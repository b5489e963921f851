"""Stores of one process migrating their databases at the same time each migrate their own.

Before: alembic keeps its migration context in module globals, and each store's migration awaits its database in
the middle of it, so two first operations at once (two stores on two databases, an app opening both at start) ran
in one another's context: one failed with KeyError('config'), the other with 'relation "iii_stream_items" already
exists' (it had been given the other store's connection). Now migrations in one process take turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams.migrate import current_revision, upgrade
from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)
STORES = 3


@pytest.fixture
def fresh_pg_urls() -> Iterator[list[str]]:
    with (scratch_database(require_postgres(), migrated=False) as a,
          scratch_database(require_postgres(), migrated=False) as b,
          scratch_database(require_postgres(), migrated=False) as c):
        yield [a, b, c]


async def _first_operations_at_once(urls: list[str]) -> None:
    stores = [SQLStream.from_url(url, create=True) for url in urls]
    try:
        item = {"stream_name": "r3", "group_id": "g", "item_id": "i"}
        results = await asyncio.gather(*(store.set(StreamSetInput(**item, data=n)) for n, store in enumerate(stores)),
                                       return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert [await store.get(StreamGetInput(**item)) for store in stores] == list(range(STORES))
        for store in stores:
            async with store.engine.connect() as conn:
                assert await conn.run_sync(current_revision) == "0001_stream_items"
    finally:
        for store in stores:
            await store.aclose()


async def test_postgresql_stores_migrating_at_once_each_migrate_their_own(fresh_pg_urls: list[str]) -> None:
    await _first_operations_at_once(fresh_pg_urls)


async def test_sqlite_stores_migrating_at_once_each_migrate_their_own(tmp_path: Path) -> None:
    await _first_operations_at_once([f"sqlite+aiosqlite:///{tmp_path / f's{n}.db'}" for n in range(STORES)])


async def test_upgrades_at_once_each_upgrade_their_own(fresh_pg_urls: list[str]) -> None:
    results = await asyncio.gather(*(upgrade(url) for url in fresh_pg_urls), return_exceptions=True)
    assert results == [(None, "0001_stream_items")] * STORES
