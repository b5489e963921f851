"""Stream stores against real servers (issues #10, #11): backend errors wrapped as ``StreamError`` with the cause
kept, ``timeout=`` bounding waits on a silent or locked backend, and group commit (many writes per transaction,
no retry storm, nothing lost)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import event

from iii.stream import (
    StreamGetInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateIncrement,
)
from iii_streams import (
    RedisStream,
    SQLStream,
    StreamTimeoutError,
    StreamUnavailableError,
)
from tests.integration.streams.sqlite_statements import count_trips
from tests.services import require_redis

ROOT = Path(__file__).resolve().parents[3]
INCREMENT = [UpdateIncrement(path="n", by=1)]


def _item(stream: str, item: str = "c") -> dict[str, str]:
    return {"stream_name": stream, "group_id": "g", "item_id": item}


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: every wait on it must be bounded by us."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in held:
        writer.close()
    await server.wait_closed()


def _commits(store: SQLStream) -> list[int]:
    count = [0]

    @event.listens_for(store.engine.sync_engine, "commit")
    def _on_commit(_conn: Any) -> None:
        count[0] += 1

    return count


# -- errors ------------------------------------------------------------------------------------------------------


async def test_unreachable_redis_raises_stream_unavailable_with_the_cause() -> None:
    async with RedisStream.from_url("redis://127.0.0.1:1/0") as store:
        with pytest.raises(StreamUnavailableError, match=r"RedisStream\.get: Redis unreachable") as failed:
            await store.get(StreamGetInput(**_item("s")))
        assert isinstance(failed.value.__cause__, RedisConnectionError)
        with pytest.raises(StreamUnavailableError, match=r"RedisStream\.update"):
            await store.update(StreamUpdateInput(**_item("s"), ops=INCREMENT))


async def test_unreachable_postgres_raises_stream_unavailable_with_the_cause() -> None:
    async with SQLStream.from_url("postgresql+asyncpg://nobody@127.0.0.1:1/none") as store:
        with pytest.raises(StreamUnavailableError, match=r"SQLStream\.get: (database|backend) unreachable") as failed:
            await store.get(StreamGetInput(**_item("s")))
        assert failed.value.__cause__ is not None


# -- timeouts ----------------------------------------------------------------------------------------------------


async def test_redis_operations_time_out_on_a_silent_server(silent_server: int) -> None:
    async with RedisStream.from_url(f"redis://127.0.0.1:{silent_server}/0", timeout=1) as store:
        loop = asyncio.get_running_loop()
        for call in (lambda: store.get(StreamGetInput(**_item("s")), timeout=0.2),
                     lambda: store.update(StreamUpdateInput(**_item("s"), ops=INCREMENT), timeout=0.2)):
            started = loop.time()
            with pytest.raises(StreamTimeoutError, match=r"did not finish within 0\.2 s"):
                await call()
            assert loop.time() - started < 2.0


async def test_the_store_timeout_bounds_a_redis_update_batch_on_its_shared_timer(silent_server: int) -> None:
    """A batch runs in its own task under the store's limit (``StoreDeadline``, one shared timer): a caller with a
    longer limit of its own still learns at the store's limit, and the hash's queue moves on to the next batch."""
    async with RedisStream.from_url(f"redis://127.0.0.1:{silent_server}/0", timeout=0.3) as store:
        loop = asyncio.get_running_loop()
        for _ in range(2):  # the second batch starts after the first one expired: the queue is not stuck
            started = loop.time()
            with pytest.raises(StreamTimeoutError, match=r"RedisStream\.update: timed out"):
                await store.update(StreamUpdateInput(**_item("s"), ops=INCREMENT), timeout=5)
            assert 0.25 < loop.time() - started < 2.0
        assert store._deadlines is not None and len(store._deadlines) == 0  # every entry left


async def test_sqlite_write_times_out_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SQLStream.from_url(url) as store:
        await store.set(StreamSetInput(**_item("s"), data=1))  # migrated
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the database's write lock, as another process would hold it
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(StreamTimeoutError, match=r"SQLStream\.set did not finish within 0\.3 s"):
                await store.set(StreamSetInput(**_item("s"), data=2), timeout=0.3)
            assert loop.time() - started < 2.0
        finally:
            other.execute("ROLLBACK")
            other.close()
        # a timed-out write's outcome is unknown (it was already running): it may land once the lock is free
        assert await store.get(StreamGetInput(**_item("s"))) in (1, 2)


# -- group commit ---------------------------------------------------------------------------------------------


async def test_sqlite_concurrent_writes_share_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as store:
        await store.get(StreamGetInput(**_item("s")))  # migrated before counting
        trips = count_trips(monkeypatch)[0]
        sets = [store.set(StreamSetInput(**_item("s", f"i{n}"), data={"n": n})) for n in range(200)]
        updates = [store.update(StreamUpdateInput(**_item("s"), ops=INCREMENT)) for _ in range(200)]
        results = await asyncio.gather(*sets, *updates)
        assert 1 <= trips["COMMIT"] <= 20, f"{trips['COMMIT']} transactions for 400 writes"
        assert sorted(r.new_value["n"] for r in results[200:]) == list(range(1, 201))  # each caller its own
        assert await store.get(StreamGetInput(**_item("s"))) == {"n": 200}
        listed = await store.list(StreamListInput(stream_name="s", group_id="g"))
        assert listed == [{"n": n} for n in range(200)] + [{"n": 200}]  # insertion order kept across batches


async def test_sqlite_writes_to_an_item_it_knows_take_one_statement_until_another_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a store's first write of an item, its next writes are one compare-and-set UPDATE each (no BEGIN
    IMMEDIATE / SELECT / COMMIT); a write by another process makes the next attempt change nothing and fall back
    to the locking transaction, which applies it to the current value."""
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SQLStream.from_url(url) as a, SQLStream.from_url(url) as b:
        async with a.watch(stream_name="s") as events:
            await a.update(StreamUpdateInput(**_item("s"), ops=INCREMENT))  # creates the row
            statements = count_trips(monkeypatch)[1]
            quick = [await a.update(StreamUpdateInput(**_item("s"), ops=INCREMENT)) for _ in range(3)]
            assert statements == ["UPDATE"] * 3
            await b.set(StreamSetInput(**_item("s"), data={"n": 10}))
            stale = await a.update(StreamUpdateInput(**_item("s"), ops=INCREMENT))
            seen = [(await asyncio.wait_for(anext(events), 10))["event"] for _ in range(5)]
        assert [r.new_value for r in quick] == [{"n": 2}, {"n": 3}, {"n": 4}]
        assert (stale.old_value, stale.new_value) == ({"n": 10}, {"n": 11})
        assert a.swap_misses == 1
        assert await b.get(StreamGetInput(**_item("s"))) == {"n": 11}
    assert seen == [{"type": "create", "data": {"n": 1}}] + [
        {"type": "update", "data": {"n": n}} for n in (2, 3, 4, 11)]  # this store's writes, each once


async def test_postgres_concurrent_updates_share_transactions_and_lose_nothing(pg_url: str) -> None:
    stream = f"pg-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await store.get(StreamGetInput(**_item(stream)))
        commits = _commits(store)
        results = await asyncio.gather(
            *(store.update(StreamUpdateInput(**_item(stream), ops=INCREMENT)) for _ in range(300)))
        assert sorted(r.new_value["n"] for r in results) == list(range(1, 301))
        assert sum(1 for r in results if r.old_value is None) == 1
        assert commits[0] <= 30, f"{commits[0]} transactions for 300 updates of one item"
        assert await store.get(StreamGetInput(**_item(stream))) == {"n": 300}


async def test_postgres_identical_events_in_one_batch_are_all_delivered(pg_url: str) -> None:
    """PostgreSQL delivers one of several identical notifications of a transaction: such writes are split."""
    stream = f"pg-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store, store.watch(stream_name=stream) as events:
        await asyncio.gather(*(store.set(StreamSetInput(**_item(stream), data={"same": True})) for _ in range(5)))
        got = [await asyncio.wait_for(anext(events), 10) for _ in range(5)]
    assert [e["event"]["type"] for e in got] == ["create"] + ["update"] * 4


_RACER = textwrap.dedent(
    """
    import asyncio, sys
    from iii.stream import StreamUpdateInput, UpdateIncrement
    from iii_streams import open_stream

    async def main(url, stream, n, inflight):
        async with open_stream(url, publish_events=False) as store:
            request = StreamUpdateInput(stream_name=stream, group_id="g", item_id="c",
                                        ops=[UpdateIncrement(path="n", by=1)])
            left = [n]
            async def lane():
                while left[0] > 0:
                    left[0] -= 1
                    await store.update(request)
            await asyncio.gather(*(lane() for _ in range(inflight)))
            print(store.update_conflicts)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


async def test_redis_contended_updates_from_processes_lose_nothing_without_a_retry_storm() -> None:
    """4 processes x 64 updates in flight on one item (before: ~17 WATCH retries per update, ~10 updates/s)."""
    url = require_redis()
    stream = f"contended-{uuid.uuid4().hex[:8]}"
    per_process = 150
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", _RACER, url, stream, str(per_process), "64",
                                                  env=env, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.PIPE) for _ in range(4)]
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 25)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    conflicts = sum(int(out.decode().strip()) for out, _ in outputs)
    raw = aioredis.Redis.from_url(url)
    try:
        assert await raw.hget(f"stream:{stream}:g", "c") == f'{{"n":{4 * per_process}}}'.encode()
    finally:
        await raw.delete(f"stream:{stream}:g")
        await raw.aclose()
    assert conflicts < 4 * per_process, f"{conflicts} lost WATCH races for {4 * per_process} updates"


async def test_redis_updates_in_one_process_never_race_each_other() -> None:
    url = require_redis()
    stream = f"inproc-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(url, publish_events=False) as store:
        try:
            results = await asyncio.gather(
                *(store.update(StreamUpdateInput(**_item(stream), ops=INCREMENT)) for _ in range(300)))
            assert sorted(r.new_value["n"] for r in results) == list(range(1, 301))
            assert store.update_conflicts == 0
        finally:
            await store.client.delete(f"stream:{stream}:g")
