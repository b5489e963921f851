"""A SQL store's schema check (``prepare``, the migration of a store with ``create``, ``iii-streams migrate``) looks
at the stream table too, not at the version row alone, and each damaged state fails in one line naming it and the fix
that works; applying that fix makes the store work.

Before (attack on the SQL store): with the version row kept and ``iii_stream_items`` dropped or renamed, ``prepare``
succeeded (an engine started) and every operation failed with "run `iii-streams migrate URL` or open the store with
create=True", both of which did nothing ("already at 0001_stream_items"); the unique key on ``item_key`` dropped,
``prepare`` passed and every PostgreSQL write failed; the version row deleted under an intact table was "has no stream
schema"; two version rows without ``create`` gave Alembic's "more than one head present" text.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from iii_streams import SchemaMissingError, SQLStream, StreamBackendError
from iii_streams.cli import main as cli_main
from tests.integration.streams.pg_database import admin, scratch_database
from tests.integration.streams.test_pg_group_commit import _plain
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)

ITEM = StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 1})
READ = StreamGetInput(stream_name="s", group_id="g", item_id="i")
VERSION = "iii_streams_alembic_version"
HEAD = "0001_stream_items"
MISSING = f"names revision {HEAD} but the table iii_stream_items does not exist"
DROPPED = f"{MISSING} (dropped or renamed): delete the version row (DELETE FROM {VERSION}), then migrate"
RENAMED = f"{MISSING} (renamed: its index ix_iii_stream_items_group is on the table old_items): rename it back"


def _sqlite(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


async def _written(url: str) -> None:
    async with SQLStream.from_url(url, create=True) as store:
        await store.set(ITEM)


async def _prepare_error(url: str, *, create: bool) -> Exception:
    async with SQLStream.from_url(url, create=create) as store:
        with pytest.raises((SchemaMissingError, StreamBackendError)) as failure:
            await store.prepare(timeout=10)
    return failure.value


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """A migrated PostgreSQL database of the test's own (its schema is damaged on purpose)."""
    with scratch_database(require_postgres()) as url:
        yield url


@pytest.mark.parametrize(("damage", "said", "fix"), [
    ("DROP TABLE iii_stream_items", DROPPED, f"DELETE FROM {VERSION}"),
    ("ALTER TABLE iii_stream_items RENAME TO old_items", RENAMED, "ALTER TABLE old_items RENAME TO iii_stream_items"),
])
async def test_a_version_row_without_its_table_fails_the_open_naming_the_fix(
        sqlite_url: str, tmp_path: Path, damage: str, said: str, fix: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    await _written(sqlite_url)
    _sqlite(tmp_path / "s.db", damage)
    for create in (False, True):
        error = await _prepare_error(sqlite_url, create=create)
        assert isinstance(error, SchemaMissingError if not create else StreamBackendError), repr(error)
        message = str(error)
        assert said in message and fix in message and "\n" not in message, message
    # the migrate command says the same, and no longer "already at"
    assert await asyncio.to_thread(cli_main, ["migrate", sqlite_url]) == 1
    assert said in capsys.readouterr().err
    # an engine does not start on it
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(
        "modules::stream::StreamModule", {"store_url": sqlite_url, "host": "127.0.0.1", "port": 0})]))
    with pytest.raises(ModuleStartError) as start:
        await engine.start()
    assert said in start.value.reason, start.value.reason
    # the fix it names works
    _sqlite(tmp_path / "s.db", fix)
    assert await asyncio.to_thread(cli_main, ["migrate", sqlite_url]) == 0
    async with SQLStream.from_url(sqlite_url, create=False) as store:
        await store.prepare()
        assert (await store.set(ITEM)).new_value == {"n": 1}


async def test_a_table_whose_version_row_was_deleted_is_named_so_with_the_sql_that_restores_it(
        sqlite_url: str, tmp_path: Path) -> None:
    await _written(sqlite_url)
    _sqlite(tmp_path / "s.db", f"DELETE FROM {VERSION}")
    message = str(await _prepare_error(sqlite_url, create=False))
    assert "has no stream schema" not in message, message
    assert f"the table iii_stream_items is there but the version table {VERSION} names no revision" in message
    restore = f"INSERT INTO {VERSION} (version_num) VALUES ('{HEAD}')"
    assert restore in message, message
    _sqlite(tmp_path / "s.db", restore)
    async with SQLStream.from_url(sqlite_url, create=False) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}  # the items were kept


async def test_a_dropped_version_table_is_restored_by_the_sql_named(sqlite_url: str, tmp_path: Path) -> None:
    await _written(sqlite_url)
    _sqlite(tmp_path / "s.db", f"DROP TABLE {VERSION}")
    message = str(await _prepare_error(sqlite_url, create=False))
    fix = message.split("put the row back: ")[1].split("; else")[0]
    assert fix.startswith(f"CREATE TABLE {VERSION}"), message
    _sqlite(tmp_path / "s.db", *fix.split("; "))
    async with SQLStream.from_url(sqlite_url, create=False) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}


async def test_two_version_rows_without_create_give_the_guidance_of_the_create_path(
        sqlite_url: str, tmp_path: Path) -> None:
    await _written(sqlite_url)
    _sqlite(tmp_path / "s.db", f"INSERT INTO {VERSION} VALUES ('0002_x')")
    messages = [str(await _prepare_error(sqlite_url, create=create)) for create in (False, True)]
    for message in messages:
        assert "more than one head" not in message, message
        assert f"the version table {VERSION} holds 2 rows ({HEAD}, 0002_x): it must hold one row" in message
    fix = f"DELETE FROM {VERSION} WHERE version_num <> '{HEAD}'"
    assert all(fix in message for message in messages), messages
    _sqlite(tmp_path / "s.db", fix)
    async with SQLStream.from_url(sqlite_url, create=False) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}


@pytest.mark.postgres
async def test_postgres_without_its_unique_key_fails_the_open_and_the_named_index_mends_it(fresh_pg: str) -> None:
    await _written(fresh_pg)
    plain = _plain(fresh_pg)
    await admin(plain, "ALTER TABLE iii_stream_items DROP CONSTRAINT uq_iii_stream_items_item_key")
    for create in (False, True):
        message = str(await _prepare_error(fresh_pg, create=create))
        assert "has no unique key on item_key" in message, message
    fix = "CREATE UNIQUE INDEX uq_iii_stream_items_item_key ON iii_stream_items (item_key)"
    assert fix in message, message
    await admin(plain, fix)
    async with SQLStream.from_url(fresh_pg) as store:
        await store.prepare()
        writes = await asyncio.gather(*(store.set(StreamSetInput(stream_name="s", group_id="g", item_id=str(n),
                                                                 data=n)) for n in range(10)))
        assert [w.new_value for w in writes] == list(range(10))


@pytest.mark.postgres
async def test_postgres_with_its_table_renamed_or_dropped_fails_the_open(fresh_pg: str) -> None:
    await _written(fresh_pg)
    plain = _plain(fresh_pg)
    await admin(plain, "ALTER TABLE iii_stream_items RENAME TO old_items")
    for create in (False, True):
        message = str(await _prepare_error(fresh_pg, create=create))
        assert RENAMED in message, message
    await admin(plain, "DROP TABLE old_items")
    for create in (False, True):
        message = str(await _prepare_error(fresh_pg, create=create))
        assert DROPPED in message, message
    await admin(plain, f"DELETE FROM {VERSION}")
    assert await asyncio.to_thread(cli_main, ["migrate", fresh_pg]) == 0
    async with SQLStream.from_url(fresh_pg) as store:
        await store.prepare()
        assert (await store.set(ITEM)).new_value == {"n": 1}


# -- a unique key on item_key that the writes cannot use (partial, invalid, deferrable) --------------------------

UNIQUE_KEY = "uq_iii_stream_items_item_key"
CREATE_KEY = f"CREATE UNIQUE INDEX {UNIQUE_KEY} ON iii_stream_items (item_key)"


def _mend(message: str) -> list[str]:
    """The statements a message names after 'replace it: '."""
    return message.split("replace it: ")[1].split("; ")


def _without_unique_constraint(path: Path) -> None:
    """Rebuild the SQLite stream table without its UNIQUE (item_key) constraint (SQLite cannot drop one)."""
    with closing(sqlite3.connect(path)) as db:
        ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'iii_stream_items'").fetchone()[0]
        indexes = [row[0] for row in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND "
                                                "tbl_name = 'iii_stream_items' AND sql IS NOT NULL")]
        bare = re.sub(rf",\s*CONSTRAINT {UNIQUE_KEY} UNIQUE \(item_key\)", "", ddl)
        assert bare != ddl, ddl
        db.executescript(f"ALTER TABLE iii_stream_items RENAME TO items_old; {bare}; "
                         "INSERT INTO iii_stream_items SELECT * FROM items_old; DROP TABLE items_old; "
                         + "; ".join(indexes))


async def test_sqlite_with_a_partial_unique_key_fails_the_open_and_the_named_sql_mends_it(
        sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before: prepare passed; the key held item_key unique only in the rows of stream 's'
    await _written(sqlite_url)
    _without_unique_constraint(tmp_path / "s.db")
    _sqlite(tmp_path / "s.db", f"{CREATE_KEY} WHERE stream_name = 's'")
    for create in (False, True):
        message = str(await _prepare_error(sqlite_url, create=create))
        assert f"unique key on item_key, index {UNIQUE_KEY}, is partial (it has a WHERE)" in message, message
        assert "\n" not in message
    assert _mend(message) == [f'DROP INDEX {UNIQUE_KEY}', CREATE_KEY], message
    assert await asyncio.to_thread(cli_main, ["migrate", sqlite_url]) == 1
    assert "is partial" in capsys.readouterr().err
    _sqlite(tmp_path / "s.db", *_mend(message))
    async with SQLStream.from_url(sqlite_url, create=False) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}


async def test_sqlite_with_a_whole_unique_key_beside_a_partial_one_opens(sqlite_url: str, tmp_path: Path) -> None:
    await _written(sqlite_url)
    _sqlite(tmp_path / "s.db", "CREATE UNIQUE INDEX uq_extra ON iii_stream_items (item_key) WHERE group_id = 'g'")
    async with SQLStream.from_url(sqlite_url, create=False) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}


COLUMNS = "item_key, group_key, stream_key, stream_name, group_id, item_id, value"
PG_DAMAGE = {
    # (statements run one by one, what the message says, the statement that mends it first)
    "partial": ([f"ALTER TABLE iii_stream_items DROP CONSTRAINT {UNIQUE_KEY}",
                 f"{CREATE_KEY} WHERE stream_name = 's'"],
                f"index {UNIQUE_KEY}, is partial (it has a WHERE)", f"DROP INDEX {UNIQUE_KEY}"),
    # a CREATE INDEX CONCURRENTLY that met a duplicate leaves its index invalid
    "invalid": ([f"ALTER TABLE iii_stream_items DROP CONSTRAINT {UNIQUE_KEY}",
                 f"INSERT INTO iii_stream_items ({COLUMNS}) SELECT {COLUMNS} FROM iii_stream_items",
                 f"CREATE UNIQUE INDEX CONCURRENTLY {UNIQUE_KEY} ON iii_stream_items (item_key)",
                 "DELETE FROM iii_stream_items WHERE id > (SELECT min(id) FROM iii_stream_items)"],
                f"index {UNIQUE_KEY}, is invalid", f"DROP INDEX {UNIQUE_KEY}"),
    "deferrable": ([f"ALTER TABLE iii_stream_items DROP CONSTRAINT {UNIQUE_KEY}",
                    f"ALTER TABLE iii_stream_items ADD CONSTRAINT {UNIQUE_KEY} UNIQUE (item_key) DEFERRABLE"],
                   f"constraint {UNIQUE_KEY}, is deferrable",
                   f"ALTER TABLE iii_stream_items DROP CONSTRAINT {UNIQUE_KEY}"),
}


@pytest.mark.postgres
@pytest.mark.parametrize("kind", list(PG_DAMAGE))
async def test_postgres_with_an_unusable_unique_key_fails_the_open_and_the_named_sql_mends_it(
        fresh_pg: str, kind: str) -> None:
    # before: prepare passed, then every write of a new item failed (no key ON CONFLICT (item_key) can use)
    damage, said, drop = PG_DAMAGE[kind]
    await _written(fresh_pg)
    plain = _plain(fresh_pg)
    for statement in damage:
        try:
            await admin(plain, statement)
        except asyncpg.UniqueViolationError:
            assert "CONCURRENTLY" in statement  # (it fails, leaving its index invalid)
    for create in (False, True):
        message = str(await _prepare_error(fresh_pg, create=create))
        assert f"the table iii_stream_items's unique key on item_key, {said}" in message, message
        assert "INSERT … ON CONFLICT (item_key) cannot use it" in message and "\n" not in message, message
    assert _mend(message) == [drop, CREATE_KEY], message
    for statement in _mend(message):
        await admin(plain, statement)
    async with SQLStream.from_url(fresh_pg) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}
        writes = await asyncio.gather(*(store.set(StreamSetInput(stream_name="t", group_id="g", item_id=str(n),
                                                                 data=n)) for n in range(10)))
        assert [w.new_value for w in writes] == list(range(10))


# -- the key's name held by an index or constraint that cannot serve (not unique, on two columns) ---------------
# before: the mend said CREATE UNIQUE INDEX uq_iii_stream_items_item_key alone, which failed ("already exists")

DROP_OURS = f"ALTER TABLE iii_stream_items DROP CONSTRAINT {UNIQUE_KEY}"
PG_NAME_TAKEN = {
    "non-unique index": ([DROP_OURS, f"CREATE INDEX {UNIQUE_KEY} ON iii_stream_items (item_key)"],
                         "has no unique key on item_key", [f"DROP INDEX {UNIQUE_KEY}", CREATE_KEY]),
    "two-column unique index": ([DROP_OURS, f"CREATE UNIQUE INDEX {UNIQUE_KEY} ON iii_stream_items (item_key, "
                                            "group_key)"],
                                "has no unique key on item_key", [f"DROP INDEX {UNIQUE_KEY}", CREATE_KEY]),
    "two-column unique constraint": ([DROP_OURS, f"ALTER TABLE iii_stream_items ADD CONSTRAINT {UNIQUE_KEY} "
                                                 "UNIQUE (item_key, group_key)"],
                                     "has no unique key on item_key", [DROP_OURS, CREATE_KEY]),
    # a partial key of another name beside a plain index of ours: both go
    "partial beside ours taken": ([DROP_OURS, "CREATE UNIQUE INDEX uq_part ON iii_stream_items (item_key) "
                                              "WHERE stream_name = 's'",
                                   f"CREATE INDEX {UNIQUE_KEY} ON iii_stream_items (item_key)"],
                                  "index uq_part, is partial",
                                  ["DROP INDEX uq_part", f"DROP INDEX {UNIQUE_KEY}", CREATE_KEY]),
}


async def _writes_new_items(url: str) -> None:
    async with SQLStream.from_url(url, create=False) as store:
        await store.prepare()
        assert await store.get(READ) == {"n": 1}
        writes = await asyncio.gather(*(store.set(StreamSetInput(stream_name="t", group_id="g", item_id=str(n),
                                                                 data=n)) for n in range(10)))
        assert [w.new_value for w in writes] == list(range(10))
        assert (await store.set(StreamSetInput(stream_name="t", group_id="g", item_id="0", data=9))).new_value == 9


@pytest.mark.postgres
@pytest.mark.parametrize("kind", list(PG_NAME_TAKEN))
async def test_postgres_key_name_held_by_an_unusable_index_the_mend_drops_it_first(fresh_pg: str, kind: str) -> None:
    damage, said, mend = PG_NAME_TAKEN[kind]
    await _written(fresh_pg)
    plain = _plain(fresh_pg)
    for statement in damage:
        await admin(plain, statement)
    for create in (False, True):
        message = str(await _prepare_error(fresh_pg, create=create))
        assert said in message and f"the name {UNIQUE_KEY} is taken by" in message, message
    assert _mend(message) == mend, message
    for statement in _mend(message):
        await admin(plain, statement)
    await _writes_new_items(fresh_pg)


@pytest.mark.parametrize("index", [f"CREATE INDEX {UNIQUE_KEY} ON iii_stream_items (item_key)",
                                   f"CREATE UNIQUE INDEX {UNIQUE_KEY} ON iii_stream_items (item_key, group_key)"])
async def test_sqlite_key_name_held_by_an_unusable_index_the_mend_drops_it_first(
        sqlite_url: str, tmp_path: Path, index: str) -> None:
    await _written(sqlite_url)
    _without_unique_constraint(tmp_path / "s.db")
    _sqlite(tmp_path / "s.db", index)
    message = str(await _prepare_error(sqlite_url, create=False))
    assert "has no unique key on item_key" in message and f"the name {UNIQUE_KEY} is taken by an index" in message
    assert _mend(message) == [f'DROP INDEX {UNIQUE_KEY}', CREATE_KEY], message
    _sqlite(tmp_path / "s.db", *_mend(message))
    await _writes_new_items(sqlite_url)


def test_postgres_before_11_counts_key_columns_with_indnatts() -> None:
    # indnkeyatts is PostgreSQL 11's (INCLUDE columns); before it, indnatts counts the key columns alone
    from types import SimpleNamespace
    from typing import Any

    from iii_streams import migrate

    def query(version: tuple[int, ...] | None) -> str:
        fake: Any = SimpleNamespace(dialect=SimpleNamespace(server_version_info=version))
        return str(migrate._pg_item_key_indexes(fake))
    assert "i.indnatts = 1" in query((10, 23)) and "indnkeyatts" not in query((10, 23))
    assert "i.indnkeyatts = 1" in query((15, 4)) and "i.indnkeyatts = 1" in query(None)
