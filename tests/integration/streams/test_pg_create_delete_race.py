"""PostgreSQL store: a batch that creates an item missing at its read and deletes it again (net: no row) still
inserts the row and deletes it, so a row another writer created after the read is found (the batch runs again on
it) and held off until the batch commits.

Before, such a batch wrote nothing for the item and locked nothing: with another store's create committed in
between, watchers got create(theirs), create(ours), delete(ours) and took the item for gone while its row held
the other store's value; the batch's callers were told the item was missing before their set.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

import iii_streams.sql as sql_module
from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from tests.integration.streams.test_pg_group_commit import _lock_row, _lock_waiters, _plain

pytestmark = pytest.mark.timeout(30)


async def test_a_create_and_delete_in_one_batch_sees_a_row_created_meanwhile(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the batch waits for y's row longer than its usual 100 ms, so that the other store's create lands in its window
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MIN_S", 5.0)  # (a quarter of the store's 10 s timeout: 2.5 s)
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MAX_S", 5.0)
    stream = f"cd-{uuid.uuid4().hex[:8]}"

    def put(item: str, data: Any) -> StreamSetInput:
        return StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=data)

    async with (SQLStream.from_url(pg_url, timeout=10) as batcher, SQLStream.from_url(pg_url) as other,
                SQLStream.from_url(pg_url) as watcher):
        for item in ("y", "f0"):
            await other.set(put(item, 0))
        seen: list[tuple[str, Any]] = []
        async with watcher.watch(stream_name=stream) as events:
            session = await asyncpg.connect(_plain(pg_url))
            try:
                held = await _lock_row(session, stream, "y")
                # f0 alone takes its own queue; [set x, delete x, set y] share a batch, which waits for y's row
                writes = [asyncio.ensure_future(call) for call in (
                    batcher.set(put("f0", 1)), batcher.set(put("x", "ours")),
                    batcher.delete(StreamDeleteInput(stream_name=stream, group_id="g", item_id="x")),
                    batcher.set(put("y", 1)))]
                await _lock_waiters(_plain(pg_url), 1)
                await other.set(put("x", "theirs"))  # created and committed while the batch waits
                await held.rollback()
            finally:
                await session.close()
            results = await asyncio.gather(*writes)
            await other.set(put("end", 0))  # the last event: everything before it has arrived
            async with asyncio.timeout(10):
                async for event in events:
                    seen.append((event["id"], event["event"]["type"]))
                    if event["id"] == "end":
                        break
        row = await other.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))
    # the batch ran again on the row it found: its set replaced theirs, its delete removed it
    assert (results[1].old_value, results[2].old_value) == ("theirs", "ours")  # before: None, 'ours'
    assert row is None
    assert [kind for item, kind in seen if item == "x"] == ["create", "update", "delete"]  # before: create twice
