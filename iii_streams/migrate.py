"""Apply the Alembic migrations in ``migrations/`` to a database, from sync or async code.

Example:
    >>> import asyncio
    >>> asyncio.run(migrate("sqlite+aiosqlite://"))  # an in-memory database: created, migrated, dropped
    '0001_stream_items'
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import TextClause, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .engine_bounds import close_stranded_connects, closing_stranded, run_then_dispose
from .errors import StreamBackendError, check_timeout
from .messages import error_line, mask_passwords
from .schema import TABLE_NAME, VERSION_TABLE
from .sqlite_threads import guard_aiosqlite

__all__ = ["HEAD", "MIGRATE_TIMEOUT_S", "MIGRATIONS_DIR", "SQL_SCHEMES", "current_revision", "head_revision",
           "migrate", "normalize_url", "revision_of", "schema_behind", "schema_problem", "schema_state",
           "shipped_revisions", "upgrade", "upgrade_connection"]

HEAD: Final = "head"
# PostgreSQL advisory lock key ("iiistr") held by each migration transaction: concurrent migrations (replicas
# starting at once) run one after the other, the later ones finding the schema done, instead of failing on a
# duplicate CREATE TABLE
_MIGRATION_LOCK: Final = 0x69_69_69_73_74_72

T = TypeVar("T")

# SQLite result codes of a lock wait that ran out (busy_timeout)
_SQLITE_WAITED: Final = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

_PG_MAX_MS: Final = 2_147_483_647  # PostgreSQL's largest lock_timeout / statement_timeout
_SESSION_LIMITS: Final = text("SELECT set_config('lock_timeout', :ms, true), "
                              "set_config('statement_timeout', :ms, true), "
                              "set_config('idle_in_transaction_session_timeout', :ms, true)")

MIGRATE_TIMEOUT_S: Final = 120.0
"""How long :func:`upgrade` and :func:`migrate` (and ``iii-streams``) wait, by default, for a migration to end,
connecting and waiting for another migration of the database included."""

# How long a SQLite connection waits for another's lock before "database is locked" (its busy_timeout), for the
# stores' connections (iii_streams.sql) and those of a migration run here alike
SQLITE_BUSY_S: Final = 30.0

# accepted URL schemes -> the async-driver scheme SQLAlchemy is given
SQL_SCHEMES: Final[dict[str, str]] = {
    "sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "postgresql+asyncpg": "postgresql+asyncpg",
}


def _find_migrations() -> Path:
    here = Path(__file__).resolve().parent
    # a source checkout keeps them at the repository root; a wheel may ship them inside the package
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"iii_streams migrations not found next to {here}")


MIGRATIONS_DIR: Final = _find_migrations()


def normalize_url(url: str) -> str:
    """The async-driver form of a SQL URL (``sqlite://`` → ``sqlite+aiosqlite://``, ``postgresql://`` →
    ``postgresql+asyncpg://``); any other scheme is a :class:`ValueError` naming the ones accepted.

    Example:
        >>> normalize_url("postgres://u@h/db")
        'postgresql+asyncpg://u@h/db'
        >>> normalize_url("mysql://u:pw@h/db")
        Traceback (most recent call last):
        ...
        ValueError: unsupported database URL scheme 'mysql' in 'mysql://u:***@h/db' (use sqlite+aiosqlite:///FILE \
or postgresql+asyncpg://USER@HOST/DB)
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not a database URL: {mask_passwords(url)!r} (use sqlite+aiosqlite:///FILE or "
                         "postgresql+asyncpg://USER@HOST/DB)")
    mapped = SQL_SCHEMES.get(scheme.lower())
    if mapped is None:
        raise ValueError(f"unsupported database URL scheme {scheme!r} in {mask_passwords(url)!r} (use "
                         "sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB)")
    normalized = f"{mapped}://{rest}"
    try:
        make_url(normalized)  # (a port that is not a number, an unclosed [: found now, said in one line)
    except (ValueError, ArgumentError) as exc:
        raise ValueError(f"not a valid database URL: {mask_passwords(url)!r} ({exc})") from None
    _check_not_directory(normalized, shown=url)
    return normalized


def _check_not_directory(url: str, shown: str) -> None:
    """Refuse a SQLite URL whose file is a directory: sqlite3 opened ``/srv/data/`` as a new file named ``data``
    beside it (a migrate "succeeded" into that file), and an existing directory failed later with "unable to open
    database file".

    Example:
        >>> _check_not_directory("sqlite+aiosqlite:////srv/data/", shown="sqlite:////srv/data/")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: database URL 'sqlite:////srv/data/' names a directory, not a file ...
    """
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    path, _, inner = database.partition("?")
    options = {**dict(parse_qsl(inner)), **{key: str(value) for key, value in parsed.query.items()}}
    if options.get("mode") == "memory" or options.get("vfs") == "memdb":
        return  # (a named in-memory database: no file at all)
    if options.get("uri", "").lower() in ("true", "1") and path.startswith("file:"):
        path = unquote(path.removeprefix("file:"))  # without uri=true, sqlite opens a file named "file:…" as it is
    if path.endswith(("/", os.sep)) or (path and os.path.isdir(path)):
        raise ValueError(f"database URL {mask_passwords(shown)!r} names a directory, not a file (end it with the "
                         "database file's name, e.g. …/streams.db)")


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _serialize(connection: Connection) -> None:
    """Wait for any other migration of this database to commit: a PostgreSQL advisory lock, or SQLite's write lock
    (both end with the transaction)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite" and _driver_in_transaction(connection) is False:
        # A caller's own engine with the driver's default transaction handling: nothing is begun yet, and the driver
        # would run CREATE TABLE outside any transaction, so processes migrating at once both created the table and
        # the later failed with "already exists". Begun here, the write lock comes before the version is read.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _driver_in_transaction(connection: Connection) -> bool | None:
    """Whether the SQLite driver connection has a transaction open (``None``: the driver does not say)."""
    driver = connection.connection.driver_connection
    state = getattr(driver, "in_transaction", None)
    return state if isinstance(state, bool) else None


def _lock_sqlite_writes(engine: AsyncEngine, busy_s: float = SQLITE_BUSY_S) -> None:
    """Make every transaction of ``engine`` (SQLite) ``BEGIN IMMEDIATE``: it takes the database's write lock before
    the version is read, so concurrent migrations run one after the other, each waiting at most ``busy_s`` for it.
    The driver's own transaction handling would leave ``CREATE TABLE`` outside any transaction."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {max(1, int(busy_s * 1000))}")
        cursor.close()

    close_stranded_connects(engine)  # (after the hook: a cancel in it closes the connection: see closing_stranded)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade_connection(connection: Connection, revision: str = HEAD) -> str | None:
    """Upgrade through a sync connection (e.g. inside ``AsyncConnection.run_sync``); returns the new revision.

    On PostgreSQL it first waits for any other migration of the database to commit (an advisory lock held until
    the transaction ends). To ``head``, a database at a revision this version does not know (a later version's) is
    left as it is and its revision returned.

    Example:
        >>> from sqlalchemy import create_engine
        >>> engine = create_engine("sqlite://")  # sync code: an in-memory database
        >>> with engine.begin() as connection:
        ...     upgrade_connection(connection), current_revision(connection)
        ('0001_stream_items', '0001_stream_items')
        >>> engine.dispose()
    """
    _serialize(connection)
    try:
        # the version table alone is not trusted: its revision with the stream table dropped made a migration that
        # did nothing ("already at"), and a store whose every operation failed
        applied, problem = schema_state(connection)
        if problem is not None:
            raise StreamBackendError(problem)
        if revision == HEAD and applied is not None and not _known(applied):
            # written by a later version (see schema_behind): nothing of ours to apply, and Alembic would fail
            # with "Can't locate revision", so a store with create (every SQLite one) could not open in a rollout
            return applied
        command.upgrade(_config(connection), revision)
        return current_revision(connection)
    except CommandError as exc:
        # Alembic's own error escaped the store's error contract, every operation of a store with create raising it
        raise StreamBackendError(f"cannot migrate: {error_line(exc)} (the version table {VERSION_TABLE} must hold "
                                 "one row, the schema's revision)") from exc
    except SQLAlchemyError as exc:
        if TABLE_NAME in str(exc) and "already exists" in str(exc):
            # before: "database unreachable: table iii_stream_items already exists"
            raise StreamBackendError(
                f"cannot migrate: {error_line(exc)}: the stream table is there but the version table "
                f"{VERSION_TABLE} names no revision (emptied, dropped, or the table made by other means); "
                f"put the revision back (INSERT INTO {VERSION_TABLE} VALUES ('{head_revision()}') if the table is "
                "this version's) or drop the table") from exc
        raise


_MIGRATE_AGAIN: Final = "run `iii-streams migrate URL` (a store opened with create=True migrates as it opens)"


class _SeveralRevisions(StreamBackendError):
    """The version table holds more than one row (:func:`current_revision`)."""


def current_revision(connection: Connection) -> str | None:
    """The applied revision, or ``None`` for a database never migrated; a version table of several rows is a
    :class:`~iii_streams.errors.StreamBackendError` naming them and how to mend it (Alembic said only "more than one
    head present; please use get_current_heads()").

    Example:
        >>> import asyncio
        >>> async def demo() -> tuple[str | None, str | None]:
        ...     engine = create_async_engine("sqlite+aiosqlite://")
        ...     try:
        ...         async with engine.begin() as conn:
        ...             before = await conn.run_sync(current_revision)
        ...             await conn.run_sync(upgrade_connection)
        ...             return before, await conn.run_sync(current_revision)
        ...     finally:
        ...         await engine.dispose()
        >>> asyncio.run(demo())
        (None, '0001_stream_items')
    """
    try:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
    except CommandError as exc:
        rows = [str(row) for row in connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()]
        if len(rows) < 2:
            raise
        raise _SeveralRevisions(_several_revisions(rows)) from exc


def _several_revisions(rows: list[str]) -> str:
    """What a version table holding ``rows`` (more than one) is, and how to mend it.

    Example:
        >>> _several_revisions(["0001_stream_items", "0002_x"])  # doctest: +NORMALIZE_WHITESPACE
        "the version table iii_streams_alembic_version holds 2 rows (0001_stream_items, 0002_x): it must hold one
        row, the schema's revision; if the table iii_stream_items is this version's, delete the others:
        DELETE FROM iii_streams_alembic_version WHERE version_num <> '0001_stream_items'"
    """
    head = head_revision()
    mend = (f"DELETE FROM {VERSION_TABLE} WHERE version_num <> '{head}'" if head in rows else
            f"DELETE FROM {VERSION_TABLE}; INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{head}')")
    return (f"the version table {VERSION_TABLE} holds {len(rows)} rows ({', '.join(rows)}): it must hold one row, "
            f"the schema's revision; if the table {TABLE_NAME} is this version's, delete the others: {mend}")


def schema_state(connection: Connection, migrate_again: str = _MIGRATE_AGAIN) -> tuple[str | None, str | None]:
    """``(the applied revision, what is wrong)``: what keeps the database from the schema its version table names,
    with the fix, in one line (``migrate_again``: how to migrate, for the fixes that end so), else ``None`` (see
    :func:`schema_problem`; a version table of several rows is one such problem, with no revision).

    Example:
        >>> from sqlalchemy import create_engine
        >>> engine = create_engine("sqlite://")
        >>> with engine.begin() as connection:
        ...     fresh = schema_state(connection)
        ...     _ = upgrade_connection(connection)
        ...     _ = connection.exec_driver_sql("DROP TABLE iii_stream_items")
        ...     dropped = schema_state(connection)
        >>> engine.dispose()
        >>> fresh, dropped[0], dropped[1].split(" (")[0]  # doctest: +NORMALIZE_WHITESPACE
        ((None, None), '0001_stream_items', 'the version table iii_streams_alembic_version names revision
        0001_stream_items but the table iii_stream_items does not exist')
    """
    try:
        revision = current_revision(connection)
    except _SeveralRevisions as exc:
        return None, str(exc)
    return revision, schema_problem(connection, revision, migrate_again)


def schema_problem(connection: Connection, revision: str | None,
                   migrate_again: str = _MIGRATE_AGAIN) -> str | None:
    """What keeps the database behind ``connection``, whose version table names ``revision`` (``None``: none), from
    being that schema, with the fix, in one line; ``None`` when nothing does. Checked: the stream table is there for
    this version's revision (and its unique key on ``item_key``, which PostgreSQL's ``INSERT … ON CONFLICT`` needs),
    and absent when no revision is named. A revision of another version is not checked (its schema is its own).

    Why: trusting the version row alone, a database whose stream table was dropped (or renamed) opened, every
    operation then failing with advice to migrate that did nothing ("already at 0001_stream_items"); one without its
    unique key opened and every write failed; a table with its version row deleted was said to have no schema.

    Example:
        >>> from sqlalchemy import create_engine
        >>> engine = create_engine("sqlite://")
        >>> with engine.begin() as connection:
        ...     _ = upgrade_connection(connection)
        ...     _ = connection.exec_driver_sql("DELETE FROM iii_streams_alembic_version")
        ...     problem = schema_problem(connection, None)
        >>> engine.dispose()
        >>> print(problem.split(" (")[0])
        the table iii_stream_items is there but the version table iii_streams_alembic_version names no revision
    """
    inspector = inspect(connection)
    if revision is None:
        if not inspector.has_table(TABLE_NAME):
            return None  # never migrated
        head = head_revision()
        version_table = "" if inspector.has_table(VERSION_TABLE) else (
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, CONSTRAINT {VERSION_TABLE}_pkc "
            "PRIMARY KEY (version_num)); ")
        return (f"the table {TABLE_NAME} is there but the version table {VERSION_TABLE} names no revision (its row "
                f"deleted, or the table made by other means): if the table is this version's, put the row back: "
                f"{version_table}INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{head}'); else drop the table, "
                f"then migrate: {migrate_again}")
    if revision != head_revision():
        return None
    if not inspector.has_table(TABLE_NAME):
        missing = (f"the version table {VERSION_TABLE} names revision {revision} but the table {TABLE_NAME} does "
                   "not exist")
        renamed = _renamed_to(connection)
        if renamed is not None:
            # (its indexes went with it: a new table's would clash with them)
            return (f"{missing} (renamed: its index {_GROUP_INDEX} is on the table {renamed}): rename it back: "
                    f"ALTER TABLE {renamed} RENAME TO {TABLE_NAME}")
        return (f"{missing} (dropped or renamed): delete the version row (DELETE FROM {VERSION_TABLE}), then "
                f"migrate to create it empty: {migrate_again}")
    return _unique_key_problem(connection, inspector)


_GROUP_INDEX: Final = "ix_iii_stream_items_group"  # an index of the stream table, made with it (0001)
_INDEX_TABLE: Final = {
    "sqlite": text("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = :index"),
    "postgresql": text("SELECT tablename FROM pg_indexes WHERE indexname = :index AND schemaname = current_schema()"),
}


def _renamed_to(connection: Connection) -> str | None:
    """The table the stream table's index is on, when the stream table is missing (it was renamed to that)."""
    query = _INDEX_TABLE.get(connection.dialect.name)
    if query is None:
        return None
    found = connection.execute(query, {"index": _GROUP_INDEX}).scalar()
    return None if found is None else str(found)


_UNIQUE_KEY: Final = f"uq_{TABLE_NAME}_item_key"  # the stream table's unique key on item_key (0001)
_CREATE_UNIQUE_KEY: Final = f"CREATE UNIQUE INDEX {_UNIQUE_KEY} ON {TABLE_NAME} (item_key)"
# PostgreSQL: the unique indexes whose one key column is item_key, with what a write needs of each: valid (not left
# by a CREATE INDEX CONCURRENTLY that failed), whole (no WHERE) and checked at once (not DEFERRABLE), else INSERT …
# ON CONFLICT (item_key) cannot use it; and the constraint it backs, if any (DROP INDEX refuses those). {keys}: the
# count of key columns, indnkeyatts from PostgreSQL 11 (INCLUDE columns count in indnatts), indnatts before
_PG_ITEM_KEY_INDEXES: Final = (
    "SELECT c.relname, i.indisvalid, i.indpred IS NULL, i.indimmediate, con.conname FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
    "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
    "AND con.contype IN ('u', 'p') "
    "WHERE i.indrelid = to_regclass(CAST(:table AS text)) AND i.indisunique AND i.{keys} = 1 "
    "AND a.attname = 'item_key'")
# PostgreSQL: what holds the name of our unique key in the stream table's schema (CREATE INDEX of that name fails
# while it does): its kind, and the constraint whose index it is, with that constraint's table (DROP INDEX refuses)
_PG_NAME_HOLDER: Final = text(
    "SELECT CAST(c.relkind AS text), con.conname, CAST(CAST(con.conrelid AS regclass) AS text) FROM pg_class c "
    "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
    "LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.conrelid = i.indrelid "
    "AND con.contype IN ('u', 'p', 'x') "
    "WHERE c.relname = :name AND c.relnamespace = "
    "(SELECT relnamespace FROM pg_class WHERE oid = to_regclass(CAST(:table AS text)))")
_SQLITE_NAME_HOLDER: Final = text("SELECT type FROM sqlite_master WHERE lower(name) = lower(:name)")


def _pg_item_key_indexes(connection: Connection) -> TextClause:
    """:data:`_PG_ITEM_KEY_INDEXES` for the server's version (``indnkeyatts`` is PostgreSQL 11's)."""
    version = connection.dialect.server_version_info
    old = version is not None and version < (11,)
    return text(_PG_ITEM_KEY_INDEXES.format(keys="indnatts" if old else "indnkeyatts"))


def _name_holder(connection: Connection) -> tuple[str, str | None] | None:
    """What holds the name :data:`_UNIQUE_KEY` (its kind, ``"index"`` or another), and the statement that drops it
    (``None``: not ours to drop, a table or view of that name); ``None`` when the name is free."""
    dialect = connection.dialect.name
    quoted = connection.dialect.identifier_preparer.quote(_UNIQUE_KEY)
    if dialect == "postgresql":
        row = connection.execute(_PG_NAME_HOLDER, {"name": _UNIQUE_KEY, "table": TABLE_NAME}).first()
        if row is None:
            return None
        kind, constraint, table = row
        if constraint is not None:
            return (f"constraint {constraint}'s index",
                    f"ALTER TABLE {table} DROP CONSTRAINT {connection.dialect.identifier_preparer.quote(constraint)}")
        if kind in ("i", "I"):
            return "index", f"DROP INDEX {quoted}"
        return _PG_KINDS.get(str(kind), f"relation (relkind {kind})"), None
    if dialect == "sqlite":
        found = connection.execute(_SQLITE_NAME_HOLDER, {"name": _UNIQUE_KEY}).scalar()
        if found is None:
            return None
        return (str(found), f"DROP INDEX {quoted}" if found == "index" else None)
    return None


_PG_KINDS: Final = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "S": "sequence",
                    "f": "foreign table", "c": "composite type"}


def _unique_key_problem(connection: Connection, inspector: Any) -> str | None:
    """What keeps the stream table's unique key on ``item_key`` from serving its writes, with the SQL that mends it,
    in one line; ``None`` when one unique index or constraint on ``item_key`` alone is valid, whole (not partial)
    and, on PostgreSQL, not deferrable.

    Why: a partial or invalid unique index passed the check (it is unique and on item_key), then every PostgreSQL
    write of a new item failed: its ``INSERT … ON CONFLICT (item_key)`` finds no key it can use; SQLite's kept
    item_key unique only for the rows of its WHERE.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        found = [(str(name), [why for why, bad in (("invalid (left by a CREATE INDEX CONCURRENTLY that failed, or "
                                                     "still being built)", not valid), ("partial (it has a WHERE)",
                                                                                        not whole),
                                                    ("deferrable", not immediate)) if bad], constraint)
                 for name, valid, whole, immediate, constraint in connection.execute(
                     _pg_item_key_indexes(connection), {"table": TABLE_NAME})]
        effect = "every write of a new item fails: INSERT … ON CONFLICT (item_key) cannot use it"
    elif dialect == "sqlite":
        found = [(str(name), ["partial (it has a WHERE)"] if partial else [], None)
                 for name, partial in _sqlite_item_key_indexes(connection)]
        effect = "it keeps item_key unique only in the rows its WHERE selects"
    else:  # no dialect of its own: any unique key on item_key alone
        extra_keys = inspector.get_unique_constraints(TABLE_NAME) + [
            index for index in inspector.get_indexes(TABLE_NAME) if index.get("unique")]
        found = [("", [], None)] if any(key["column_names"] == ["item_key"] for key in extra_keys) else []
    if any(not why for _, why, _ in found):
        return None
    # A new key needs its name free: an index of that name that cannot serve (not unique, on more columns than
    # item_key) made the mend's CREATE UNIQUE INDEX fail ("already exists")
    holder = _name_holder(connection)
    if not found:
        problem = (f"the table {TABLE_NAME} has no unique key on item_key (its constraint dropped?), which its "
                   "writes need")
        if holder is None:
            return f"{problem}: put it back: {_CREATE_UNIQUE_KEY}"
        return _name_taken(problem, holder, [])
    # the one of our name first: dropped, its name is free for the new one
    name, why, constraint = min(found, key=lambda row: (row[0] != _UNIQUE_KEY, row[0]))
    quoted = connection.dialect.identifier_preparer.quote(name)
    drop = f"ALTER TABLE {TABLE_NAME} DROP CONSTRAINT {quoted}" if constraint else f"DROP INDEX {quoted}"
    problem = (f"the table {TABLE_NAME}'s unique key on item_key, {'constraint' if constraint else 'index'} {name}, "
               f"is {' and '.join(why)}, and {effect}")
    if holder is None or name == _UNIQUE_KEY:
        return f"{problem}: replace it: {drop}; {_CREATE_UNIQUE_KEY}"
    return _name_taken(problem, holder, [drop])


def _name_taken(problem: str, holder: tuple[str, str | None], drops: list[str]) -> str:
    """``problem``'s message when the name of the key to create is held by ``holder`` (:func:`_name_holder`)."""
    kind, drop_holder = holder
    article = "an" if kind[0] in "aeiou" else "a"
    taken = f"; the name {_UNIQUE_KEY} is taken by {article} {kind} that is not a unique key on item_key alone"
    if drop_holder is None:
        return (f"{problem}{taken}, not one to drop: rename it, then replace the key: "
                f"{'; '.join([*drops, _CREATE_UNIQUE_KEY])}")
    return f"{problem}{taken}: replace it: {'; '.join([*drops, drop_holder, _CREATE_UNIQUE_KEY])}"


def _sqlite_item_key_indexes(connection: Connection) -> list[tuple[str, bool]]:
    """SQLite's unique indexes on ``item_key`` alone (a ``UNIQUE`` constraint's included), each with whether it is
    partial (``PRAGMA index_list``'s ``partial`` column)."""
    quote = connection.dialect.identifier_preparer.quote
    found = []
    for row in connection.exec_driver_sql(f"PRAGMA index_list({quote(TABLE_NAME)})").all():
        name, unique, partial = row[1], row[2], row[4]
        if unique:
            columns = [info[2] for info in connection.exec_driver_sql(f"PRAGMA index_info({quote(name)})").all()]
            if columns == ["item_key"]:
                found.append((str(name), bool(partial)))
    return found


@functools.cache
def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    """The revision ``iii-streams migrate`` brings a database to (the newest migration this version ships).

    Example:
        >>> head_revision()
        '0001_stream_items'
    """
    head = _script().get_current_head()
    assert head is not None, f"no migration in {MIGRATIONS_DIR}"
    return head


def schema_behind(revision: str | None) -> bool:
    """Whether a database at ``revision`` (``None``: never migrated) lacks a migration this version ships.

    A revision this version does not know is taken as newer (written by a later version, which keeps the schema
    readable by the versions before it during a rolling upgrade): not behind.

    Example:
        >>> schema_behind(None), schema_behind(head_revision()), schema_behind("9999_from_a_later_version")
        (True, False, False)
    """
    if revision is None:
        return True
    if revision == head_revision():
        return False
    return _known(revision)


def _known(revision: str) -> bool:
    """Whether ``revision`` is one of the migrations this version ships."""
    return revision in shipped_revisions()


def shipped_revisions() -> list[str]:
    """The revisions of the migrations this version ships, oldest first.

    Example:
        >>> shipped_revisions()[0]
        '0001_stream_items'
    """
    return [script.revision for script in reversed(list(_script().walk_revisions()))]


# Alembic keeps the running migration's context in module globals, and a migration run through an async driver
# awaits its database in the middle of it: two at once in one process (two stores opened together, on one database
# or two) ran in one another's context, one failing with KeyError('config') and the other given the wrong
# connection. So migrations in one process take turns, whatever their loop or thread.
_ALEMBIC_TURN: Final = threading.Lock()
_ALEMBIC_WAIT_S: Final = 600.0
_ALEMBIC_POLL_S: Final = 0.01


@contextlib.asynccontextmanager
async def _alembic_turn() -> AsyncIterator[None]:
    """Hold this process's migration turn, waiting at most ``_ALEMBIC_WAIT_S`` for it.

    Polled, not waited for in a thread: a thread still waiting when its caller is cancelled would take the turn
    later with nobody to give it back. Only migrations at once wait, and they are rare (a process's start).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _ALEMBIC_WAIT_S
    while not _ALEMBIC_TURN.acquire(blocking=False):
        if loop.time() >= deadline:
            raise TimeoutError(f"another migration of this process ran for more than {_ALEMBIC_WAIT_S:.0f} s")
        await asyncio.sleep(_ALEMBIC_POLL_S)
    try:
        yield
    finally:
        _ALEMBIC_TURN.release()


async def migrate_with(target: AsyncEngine | AsyncConnection, revision: str = HEAD) -> str | None:
    """Upgrade the database behind ``target`` to ``revision`` in one transaction; returns the new revision.

    Migrations of one process run one at a time (Alembic's context is global to the process).

    Example:
        >>> import asyncio
        >>> async def demo():
        ...     engine = create_async_engine("sqlite+aiosqlite://")
        ...     try:
        ...         return await migrate_with(engine)
        ...     finally:
        ...         await engine.dispose()
        >>> asyncio.run(demo())
        '0001_stream_items'
    """
    async with _alembic_turn():
        if isinstance(target, AsyncConnection):
            return await target.run_sync(upgrade_connection, revision)
        with closing_stranded(target):
            async with target.begin() as conn:
                return await conn.run_sync(upgrade_connection, revision)


async def upgrade(url: str, revision: str = HEAD, *,
                  timeout: float | None = MIGRATE_TIMEOUT_S) -> tuple[str | None, str | None]:
    """Upgrade the database at ``url`` (``sqlite+aiosqlite:///…``, ``postgresql+asyncpg://…``) in one transaction;
    returns ``(revision before, revision after)``, equal when there was nothing to do.

    ``timeout`` bounds the whole of it on PostgreSQL (connecting, waiting for another migration of the database,
    migrating; ``None``: no bound), and on SQLite each wait for another process's lock: past it
    :class:`TimeoutError` names the database. A server gone silent would otherwise
    hold the caller for good. Nothing is committed unless the time ran out during the commit itself
    (:func:`revision_of` then tells).

    Example:
        >>> import asyncio
        >>> asyncio.run(upgrade("sqlite+aiosqlite://"))
        (None, '0001_stream_items')
    """

    def run(connection: Connection) -> tuple[str | None, str | None]:
        bounded.limit_session(connection)
        _serialize(connection)  # before the version is read: it may be another migration's to write
        before = current_revision(connection)
        return before, upgrade_connection(connection, revision)

    bounded = _Bounded(url, timeout)
    if bounded.engine.dialect.name == "sqlite":
        _lock_sqlite_writes(bounded.engine, bounded.busy_s)

    async def work() -> tuple[str | None, str | None]:
        with closing_stranded(bounded.engine):
            async with _alembic_turn(), bounded.engine.begin() as conn:
                return await conn.run_sync(run)

    return await bounded.run(work())


async def revision_of(url: str, *, timeout: float | None = MIGRATE_TIMEOUT_S) -> str | None:
    """The revision applied to the database at ``url`` (``None``: never migrated), read within ``timeout`` seconds
    (as for :func:`upgrade`). A SQLite file that does not exist is created empty by the read: check first.

    Example:
        >>> import asyncio
        >>> asyncio.run(revision_of("sqlite+aiosqlite://"))  # an in-memory database, never migrated
    """
    bounded = _Bounded(url, timeout)
    close_stranded_connects(bounded.engine)

    def read_in(connection: Connection) -> str | None:
        bounded.limit_session(connection)
        return current_revision(connection)

    async def read() -> str | None:
        with closing_stranded(bounded.engine):
            async with bounded.engine.connect() as conn:
                return await conn.run_sync(read_in)

    return await bounded.run(read())


class _Bounded:
    """A short-lived engine for one piece of work on ``url`` within ``timeout`` seconds, however its database behaves.

    PostgreSQL: the work is cut at the bound (:func:`~iii_streams.engine_bounds.run_then_dispose`), and the server is
    told the bound too, a second past it (``lock_timeout``, ``statement_timeout``,
    ``idle_in_transaction_session_timeout``, set in the work's own transaction by :meth:`limit_session`: poolers
    such as PgBouncer pass that on, where they refuse such settings at connect), so a session the cut leaves behind,
    waiting for another migration's lock, ends by itself instead of holding a connection until that lock is free.
    SQLite: nothing to cut (the driver's thread would keep waiting and hold the work), so its own lock wait is the
    bound (``busy_timeout``); a wait that ends so is a :class:`TimeoutError` too.
    """

    def __init__(self, url: str, timeout: float | None) -> None:
        self.timeout = check_timeout(timeout)
        self.database = f"database {mask_passwords(url)}"
        normalized = normalize_url(url)
        self.sqlite = normalized.startswith("sqlite")
        self.busy_s = SQLITE_BUSY_S if self.timeout is None else self.timeout
        # sqlite3's own wait for a lock (a read's, here)
        connect_args: dict[str, Any] = {"timeout": self.busy_s} if self.sqlite else {}
        self.engine = create_async_engine(normalized, connect_args=connect_args)
        if self.sqlite:
            # a SQLite file that fails to open leaves aiosqlite's thread to answer on this loop later, and
            # `iii-streams migrate` closed its loop first: the thread's "Event loop is closed" traceback followed the
            # one-line error; and a migration cut by a timeout must not leave its connection holding the write lock
            guard_aiosqlite(self.engine)
        else:
            # the bound's cut in a connection's set-up (a server gone silent after the handshake) left it open on
            # SQLAlchemy < 2.0.53, its socket closed by the garbage collector only (the work runs in closing_stranded;
            # SQLite's engine is given it once its own hook is added)
            close_stranded_connects(self.engine)

    def limit_session(self, connection: Connection) -> None:
        """PostgreSQL, a bound given: the server's own limits for the work's transaction, a second past the bound
        (PostgreSQL takes at most 2,147,483,647 ms: a longer bound gives that)."""
        if self.sqlite or self.timeout is None:
            return
        ms = str(min(_PG_MAX_MS, int((self.timeout + 1.0) * 1000)))
        connection.execute(_SESSION_LIMITS, {"ms": ms})

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            return await run_then_dispose(self.engine, work, None if self.sqlite else self.timeout, self.database)
        except OperationalError as exc:
            if self.sqlite and getattr(exc.orig, "sqlite_errorcode", None) in _SQLITE_WAITED:
                raise TimeoutError(f"{self.database} gave no result within {self.busy_s:g} s") from None
            raise


async def migrate(url: str, revision: str = HEAD, *, timeout: float | None = MIGRATE_TIMEOUT_S) -> str | None:
    """Upgrade the database at ``url`` (``sqlite+aiosqlite:///…``, ``postgresql+asyncpg://…``); returns the new
    revision. ``timeout``: as for :func:`upgrade`.

    Example:
        >>> import asyncio, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     url = f"sqlite+aiosqlite:///{tmp}/streams.db"
        ...     asyncio.run(migrate(url)), asyncio.run(migrate(url))  # the second finds nothing to do
        ('0001_stream_items', '0001_stream_items')
    """
    return (await upgrade(url, revision, timeout=timeout))[1]
