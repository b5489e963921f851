"""A scratch PostgreSQL database per test module: ``iii_test_<random>``, migrated with ``iii-streams migrate``
and dropped (``WITH (FORCE)``) at the end.

Example:
    @pytest.fixture(scope="module")
    def pg_url() -> Iterator[str]:
        with scratch_database(require_postgres()) as url:   # postgresql+asyncpg://…/iii_test_…
            yield url
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy.engine import make_url

from iii_streams.cli import main as cli_main

__all__ = ["admin", "database_url", "scratch_database"]


async def admin(server_url: str, sql: str) -> None:
    """Run one statement on the server's default database (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def database_url(server_url: str, name: str) -> str:
    """The ``postgresql+asyncpg://`` URL of database ``name`` on the server of ``server_url``."""
    return make_url(server_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


@contextmanager
def scratch_database(server_url: str, *, migrated: bool = True) -> Iterator[str]:
    """Create a fresh database (migrated unless told otherwise), yield its URL, drop it afterwards.

    Blocking (it runs its own event loop), so use it from synchronous fixtures.
    """
    name = f"iii_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        url = database_url(server_url, name)
        if migrated:
            assert cli_main(["migrate", url]) == 0, f"iii-streams migrate {url} failed"
        yield url
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
