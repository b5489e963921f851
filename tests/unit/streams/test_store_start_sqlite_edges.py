"""SQLite stores at a module's start, at their edges: a schema written by a later version (and the engine's start
on such a file); the ``iii-streams migrate`` command a missing schema names, for a path with a space and in memory.

Before: a SQLite store (``create``, the default) on a file a later version had migrated failed at ``prepare()``
with ``StreamBackendError … Can't locate revision identified by '0002_from_a_later_version'`` (and each operation
with Alembic's bare ``CommandError``), though a store without ``create`` accepts that schema as newer. The command
printed for ``/…/my data/s.db`` was unquoted (pasted: ``unrecognized arguments: data/s.db``, exit 2); for an
in-memory database it named ``iii-streams migrate sqlite+aiosqlite://``, which migrates another, new database.
"""

from __future__ import annotations

import asyncio
import shlex
import sqlite3
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_streams.cli import main as cli_main
from iii_streams.errors import SchemaMissingError
from iii_streams.schema import VERSION_TABLE
from iii_streams.sql import SQLStream

LATER = "0002_from_a_later_version"


async def _migrated_by_a_later_version(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    async with SQLStream.from_url(url) as store:
        await store.prepare()
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = ?", (LATER,))
    conn.close()
    return url


def _revision(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()[0])
    finally:
        conn.close()


async def test_a_store_with_create_opens_a_schema_from_a_later_version_and_works(tmp_path: Path) -> None:
    url = await _migrated_by_a_later_version(tmp_path / "s.db")
    async with SQLStream.from_url(url) as store:  # create: the SQLite default
        await store.prepare()
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1
    assert _revision(tmp_path / "s.db") == LATER  # left as the later version wrote it


async def test_the_engine_starts_on_a_sqlite_file_a_later_version_migrated(tmp_path: Path) -> None:
    url = await _migrated_by_a_later_version(tmp_path / "s.db")
    config = EngineConfig(host="127.0.0.1", port=0,
                          modules=[ModuleSpec("modules::state::StateModule", {"store_url": url})])
    async with Engine(config=config) as engine:
        assert engine.module("state") is not None


def test_the_migrate_command_for_a_path_with_a_space_works_when_pasted(tmp_path: Path) -> None:
    path = tmp_path / "my data" / "s.db"
    path.parent.mkdir()
    url = f"sqlite+aiosqlite:///{path}"

    async def prepare() -> None:
        async with SQLStream.from_url(url, create=False) as store:
            await store.prepare()

    with pytest.raises(SchemaMissingError) as failure:
        asyncio.run(prepare())
    command = str(failure.value).partition("run `")[2].rstrip("`")
    assert command == f"iii-streams migrate '{url}'"
    program, *args = shlex.split(command)  # as a shell would split it
    assert program == "iii-streams" and cli_main(args) == 0
    asyncio.run(prepare())  # migrated by the command as printed


async def test_an_in_memory_database_without_create_is_told_to_create_not_to_migrate() -> None:
    async with SQLStream.from_url("sqlite+aiosqlite://", create=False) as store:
        with pytest.raises(SchemaMissingError) as failure:
            await store.prepare()
    assert str(failure.value) == ("in-memory SQLite database has no stream schema: an in-memory database is new "
                                  "in each store: open it with create=True")
