"""SQLStream group-commits writes (one transaction for the writes waiting together): when the database refuses one
of them for its data (here a CHECK constraint on PostgreSQL, a trigger's RAISE on SQLite, as a DBA might add), only
that write fails, with the database's own words; the others of its batch are applied and acknowledged, each with
its own result, and the writes of one item keep their order. Before: every write of the batch failed with the
refused one's error (``applied`` False, but failed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError
from tests.integration.streams.pg_database import admin, scratch_database
from tests.integration.streams.test_pg_group_commit import _plain
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)

REFUSED = {"tag": "refuse-me"}  # a value the database's rule refuses (its JSON text holds "refuse-me")
_SQLITE_RULE = ("CREATE TRIGGER refuse_marked_{kind} BEFORE {kind} ON iii_stream_items "
                "WHEN NEW.value LIKE '%refuse-me%' BEGIN SELECT RAISE(ABORT, 'refused by trigger refuse_marked'); END")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A scratch database whose table refuses, by a CHECK constraint, a value holding ``refuse-me``."""
    with scratch_database(require_postgres()) as url:
        asyncio.run(admin(_plain(url), "ALTER TABLE iii_stream_items ADD CONSTRAINT refuse_marked "
                                       "CHECK (value NOT LIKE '%refuse-me%')"))
        yield url


def _set(group: str, item: str, data: Any) -> StreamSetInput:
    return StreamSetInput(stream_name="refused", group_id=group, item_id=item, data=data)


def _get(group: str, item: str) -> StreamGetInput:
    return StreamGetInput(stream_name="refused", group_id=group, item_id=item)


async def _many_items_with_one_refused(store: SQLStream, rule: str) -> None:
    group = uuid.uuid4().hex[:8]
    count = 24
    outcomes = await asyncio.gather(
        *(store.set(_set(group, str(n), REFUSED if n == 13 else {"n": n})) for n in range(count)),
        return_exceptions=True)
    refused = outcomes.pop(13)
    assert isinstance(refused, StreamBackendError), refused
    assert rule in str(refused), str(refused)
    assert refused.applied is False
    assert [getattr(o, "new_value", o) for o in outcomes] == [{"n": n} for n in range(count) if n != 13]
    for n in range(count):
        assert await store.get(_get(group, str(n))) == (None if n == 13 else {"n": n})


async def _one_items_writes_in_order(store: SQLStream, rule: str) -> None:
    group = uuid.uuid4().hex[:8]
    # queued together: one batch of the item, whose final value (the one the database checks) is refused
    outcomes: list[Any] = await asyncio.gather(
        store.set(_set(group, "a", 1)), store.set(_set(group, "a", 2)), store.set(_set(group, "a", 3)),
        store.set(_set(group, "a", REFUSED)), return_exceptions=True)
    *done, refused = outcomes
    assert [(getattr(o, "old_value", o), getattr(o, "new_value", o)) for o in done] == [(None, 1), (1, 2), (2, 3)]
    assert isinstance(refused, StreamBackendError) and rule in str(refused), refused
    assert await store.get(_get(group, "a")) == 3


@pytest.mark.postgres
async def test_postgresql_a_refused_write_fails_alone_in_a_batch_of_many_items(pg_url: str) -> None:
    async with SQLStream.from_url(pg_url, timeout=10) as store:
        await _many_items_with_one_refused(store, "refuse_marked")


@pytest.mark.postgres
async def test_postgresql_an_items_writes_after_a_refused_batch_keep_their_order(pg_url: str) -> None:
    async with SQLStream.from_url(pg_url, timeout=10) as store:
        await _one_items_writes_in_order(store, "refuse_marked")


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> Any:
    """A SQLite store whose table refuses, by a trigger, a value holding ``refuse-me``."""
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'refusing.db'}", timeout=10) as store:
        await store.prepare()
        async with store.engine.begin() as conn:
            for kind in ("INSERT", "UPDATE"):
                await conn.exec_driver_sql(_SQLITE_RULE.format(kind=kind))
        yield store


async def test_sqlite_a_refused_write_fails_alone_in_its_batch(sqlite_store: SQLStream) -> None:
    await _many_items_with_one_refused(sqlite_store, "refused by trigger refuse_marked")


async def test_sqlite_an_items_writes_after_a_refused_batch_keep_their_order(sqlite_store: SQLStream) -> None:
    await _one_items_writes_in_order(sqlite_store, "refused by trigger refuse_marked")
