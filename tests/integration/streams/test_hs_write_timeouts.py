"""A write whose caller timed out is never applied behind its back: withdrawn while it had not been sent to be
committed (``StreamTimeoutError.applied is False``, and the database never gets it), or reported as of unknown
outcome once its commit was sent (``applied is None``, "may have been applied"). Real PostgreSQL, SQLite and a
private redis-server (CLIENT PAUSE holds commands at the server)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, SQLStream, StreamTimeoutError
from iii_streams.schema import TABLE_NAME, item_key
from tests.integration.streams.private_redis import PrivateRedis

NOT_APPLIED = r"did not finish within 0\.3 s; the write was withdrawn and not applied$"
MAYBE = r"did not finish within [0-9.]+ s; the write had been sent and may have been applied \(outcome unknown\)$"


def _item(stream: str) -> dict[str, str]:
    return {"stream_name": stream, "group_id": "g", "item_id": "c"}


def _inc(stream: str) -> StreamUpdateInput:
    return StreamUpdateInput(**_item(stream), ops=[UpdateIncrement(path="n", by=1)])


def _raw(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.mark.postgres
@pytest.mark.parametrize("known", [False, True], ids=["locking-transaction", "single-statement"])
async def test_postgres_write_that_timed_out_waiting_for_a_row_lock(pg_url: str, known: bool) -> None:
    """A store that does not know the item runs a transaction whose commit is sent only once the lock is free:
    the write is withdrawn and never applied. One that knows it sends a single autocommitted statement at once,
    which waits for the lock at the server: its outcome is unknown to the caller (and it does land)."""
    name = f"lock-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as first:
        await first.set(StreamSetInput(**_item(name), data={"n": 1}))
    async with SQLStream.from_url(pg_url) as store:
        if known:
            await store.set(StreamSetInput(**_item(name), data={"n": 1}))
        locker = await asyncpg.connect(_raw(pg_url))
        try:
            async with locker.transaction():
                # another process holds the row: every write of it waits
                await locker.execute(f"SELECT 1 FROM {TABLE_NAME} WHERE item_key = $1 FOR UPDATE",
                                     item_key(name, "g", "c"))
                with pytest.raises(StreamTimeoutError, match=MAYBE if known else NOT_APPLIED) as caught:
                    await store.set(StreamSetInput(**_item(name), data={"n": 100}), timeout=0.3)
                assert caught.value.applied is (None if known else False)
            # lock released: the timed-out batch goes on; the next write of the item queues behind it
            await store.update(_inc(name))
            assert await store.get(StreamGetInput(**_item(name))) == {"n": 101 if known else 2}
        finally:
            await locker.close()


@pytest.mark.postgres
async def test_postgres_write_whose_commit_was_sent_reports_an_unknown_outcome(pg_url: str) -> None:
    """The commit waits (a deferred trigger takes an advisory lock another session holds): the caller's timeout
    fires after the commit was sent, the error says the write may have been applied, and it was."""
    name = f"commit-{uuid.uuid4().hex[:8]}"
    locker = await asyncpg.connect(_raw(pg_url))
    try:
        await locker.execute(
            "CREATE FUNCTION hs_wait_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.value LIKE '%wait-at-commit%' THEN PERFORM pg_advisory_xact_lock(4242); END IF; "
            "RETURN NULL; END $$")
        await locker.execute(
            f"CREATE CONSTRAINT TRIGGER hs_wait_at_commit AFTER INSERT OR UPDATE ON {TABLE_NAME} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hs_wait_at_commit()")
        async with SQLStream.from_url(pg_url) as store:
            await store.set(StreamSetInput(**_item(name), data={"n": 1}))
            async with locker.transaction():
                await locker.execute("SELECT pg_advisory_xact_lock(4242)")
                with pytest.raises(StreamTimeoutError, match=MAYBE) as caught:
                    await store.set(StreamSetInput(**_item(name), data={"n": 1, "tag": "wait-at-commit"}),
                                    timeout=1.0)
                assert caught.value.applied is None
                waiting = await locker.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' "
                                                "AND datname = current_database()")
                assert waiting == 1  # the write's commit is the one waiting
            await store.update(_inc(name))  # queues behind the batch that was committing
            assert await store.get(StreamGetInput(**_item(name))) == {"n": 2, "tag": "wait-at-commit"}
    finally:
        await locker.execute(f"DROP TRIGGER IF EXISTS hs_wait_at_commit ON {TABLE_NAME}")
        await locker.execute("DROP FUNCTION IF EXISTS hs_wait_at_commit()")
        await locker.close()


@pytest.mark.parametrize("known", [False, True], ids=["locking-transaction", "single-statement"])
async def test_sqlite_write_that_timed_out_waiting_for_the_write_lock(tmp_path: Path, known: bool) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SQLStream.from_url(url) as first:
        await first.set(StreamSetInput(**_item("s"), data={"n": 1}))
    async with SQLStream.from_url(url) as store:
        if known:
            await store.set(StreamSetInput(**_item("s"), data={"n": 1}))
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the database's write lock, as another process would hold it
        try:
            with pytest.raises(StreamTimeoutError, match=MAYBE if known else NOT_APPLIED) as caught:
                await store.set(StreamSetInput(**_item("s"), data={"n": 100}), timeout=0.3)
            assert caught.value.applied is (None if known else False)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.update(_inc("s"))  # one queue per database: runs after the timed-out batch
        assert await store.get(StreamGetInput(**_item("s"))) == {"n": 101 if known else 2}


@pytest.fixture
async def paused_redis(tmp_path: Path) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        admin = aioredis.Redis.from_url(server.url)
        try:
            yield server.url, admin
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()


@pytest.mark.redis
async def test_redis_update_withdrawn_before_its_script_was_sent_is_not_applied(
        paused_redis: tuple[str, aioredis.Redis]) -> None:
    url, admin = paused_redis
    async with RedisStream.from_url(url) as first:
        await first.set(StreamSetInput(**_item("s"), data={"n": 1}))
    async with RedisStream.from_url(url) as store:  # knows nothing: its batch reads (HMGET) first
        # every command waits at the server for 2 s (the read too; UNPAUSE as well, so the pause just ends)
        await admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        with pytest.raises(StreamTimeoutError, match=NOT_APPLIED) as caught:
            await store.update(_inc("s"), timeout=0.3)
        assert caught.value.applied is False
        await store.update(_inc("s"))  # one queue per hash: after the batch that read
        assert await store.get(StreamGetInput(**_item("s"))) == {"n": 2}


@pytest.mark.redis
async def test_redis_update_whose_script_was_sent_reports_an_unknown_outcome(
        paused_redis: tuple[str, aioredis.Redis]) -> None:
    url, admin = paused_redis
    async with RedisStream.from_url(url) as store:
        await store.set(StreamSetInput(**_item("s"), data={"n": 1}))
        await store.update(_inc("s"))  # known now: the next batch sends its script at once
        await admin.execute_command("CLIENT", "PAUSE", 30000, "WRITE")  # the script waits at the server
        with pytest.raises(StreamTimeoutError, match=MAYBE) as caught:
            await store.update(_inc("s"), timeout=0.3)
        assert caught.value.applied is None
        await admin.execute_command("CLIENT", "UNPAUSE")
        await store.update(_inc("s"))
        # the batch waited for its reply and applied it: the caller was right not to be told "not applied"
        assert await store.get(StreamGetInput(**_item("s"))) == {"n": 4}


@pytest.mark.redis
async def test_redis_set_whose_script_was_sent_reports_an_unknown_outcome(
        paused_redis: tuple[str, aioredis.Redis]) -> None:
    url, admin = paused_redis
    async with RedisStream.from_url(url) as store:
        await store.set(StreamSetInput(**_item("s"), data={"n": 1}))  # the script is loaded
        await admin.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
        with pytest.raises(StreamTimeoutError, match=MAYBE) as caught:
            await store.set(StreamSetInput(**_item("s"), data={"n": 5}), timeout=0.3)
        assert caught.value.applied is None
        await admin.execute_command("CLIENT", "UNPAUSE")
        assert await store.get(StreamGetInput(**_item("s"))) in ({"n": 1}, {"n": 5})  # either: unknown


@pytest.mark.postgres
async def test_ssl_disable_in_the_url_turns_tls_off_and_the_default_keeps_it(pg_url: str) -> None:
    """The documented opt-in for a local server: ``?ssl=disable``; without it asyncpg uses TLS when offered."""
    probe = await asyncpg.connect(_raw(pg_url))
    try:
        server_tls = await probe.fetchval("SHOW ssl") == "on"
    finally:
        await probe.close()
    query = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    for url, expected in ((pg_url, server_tls), (pg_url + "?ssl=disable", False)):
        async with SQLStream.from_url(url) as store, store.engine.connect() as conn:
            assert (await conn.execute(query)).scalar() is expected
            await store.set(StreamSetInput(**_item(f"tls-{uuid.uuid4().hex[:6]}"), data=1))
