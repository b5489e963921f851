"""PostgreSQL store: a transaction that creates items inserts all their rows with ONE statement, and keeps what one
``INSERT`` a row gave: a row another writer created after the transaction's read makes it run again (that caller
gets the other writer's value as its old value), and every create is published exactly once, in order.

Before, each new row took its own ``INSERT … ON CONFLICT DO NOTHING`` (one round trip and one statement build):
64 sets of new items in flight ran 670-850 writes/s against 3,800 for existing items.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

import iii_streams.sql as sql_module
from iii.stream import StreamGetInput, StreamListInput
from iii_streams import SQLStream
from tests.integration.streams.test_pg_group_commit import _lock_row, _lock_waiters, _plain, _set

pytestmark = pytest.mark.timeout(30)


async def test_concurrent_sets_of_new_items_insert_their_rows_in_one_statement(pg_url: str) -> None:
    stream = f"ni-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # connected before counting
        inserts: list[int] = []

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def _on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT"):
                inserts.append(1)

        results = await asyncio.gather(*(store.set(_set(stream, f"i{n}", {"n": n})) for n in range(400)))
        # the writes share a handful of transactions (the first alone, the rest in batches): one INSERT each
        assert len(inserts) <= 20, f"{len(inserts)} INSERT statements for 400 new items"  # before: 400
        assert [r.old_value for r in results] == [None] * 400
        listed = await store.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(item["n"] for item in listed) == list(range(400))


async def test_a_row_created_meanwhile_among_new_rows_runs_the_transaction_again(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the batch waits for y's row longer than its usual 100 ms, so that the other store's create lands in its window
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MIN_S", 5.0)  # (a quarter of the store's 10 s timeout: 2.5 s)
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MAX_S", 5.0)
    stream = f"nr-{uuid.uuid4().hex[:8]}"
    async with (SQLStream.from_url(pg_url, timeout=10) as batcher, SQLStream.from_url(pg_url) as other,
                SQLStream.from_url(pg_url) as watcher):
        for item in ("y", "f0"):
            await other.set(_set(stream, item, 0))
        seen: list[tuple[str, str, Any]] = []
        async with watcher.watch(stream_name=stream) as events:
            session = await asyncpg.connect(_plain(pg_url))
            try:
                held = await _lock_row(session, stream, "y")
                # f0 alone takes its own queue; [y, a, b, c] share a batch, which reads, then waits for y's row
                writes = [asyncio.ensure_future(batcher.set(_set(stream, item, "ours")))
                          for item in ("f0", "y", "a", "b", "c")]
                await _lock_waiters(_plain(pg_url), 1)
                await other.set(_set(stream, "b", "theirs"))  # created and committed while the batch waits
                await held.rollback()
            finally:
                await session.close()
            results = await asyncio.gather(*writes)
            await other.set(_set(stream, "end", 0))  # the last event: everything before it has arrived
            async with asyncio.timeout(10):
                async for change in events:
                    seen.append((change["id"], change["event"]["type"], change["event"]["data"]))
                    if change["id"] == "end":
                        break
        listed = await other.list(StreamListInput(stream_name=stream, group_id="g"))
    # b's row was found at the insert: the transaction ran again and wrote over it; a and c were created once
    assert [r.old_value for r in results] == [0, 0, None, "theirs", None]
    assert sorted(listed, key=str) == [0, "ours", "ours", "ours", "ours", "ours"]
    mine = [(item, kind, data) for item, kind, data in seen if item in ("a", "b", "c")]
    assert mine == [("b", "create", "theirs"), ("a", "create", "ours"), ("b", "update", "ours"),
                    ("c", "create", "ours")]
