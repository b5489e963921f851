"""PostgreSQL store: writes of one item never wait for another item's row lock, and two stores creating the same items
in opposite orders never deadlock.

A row lock held elsewhere (a session left in ``SELECT … FOR UPDATE``, another process's long transaction) must stall
only that item's writes. One write queue for the whole store (tried for group commit across items) stalled every
item's writes behind it for up to the store's timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg

from iii.stream import StreamListInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams.schema import item_key


def _set(stream: str, item: str, data: Any) -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=data)


async def test_a_row_lock_held_elsewhere_stalls_only_its_item(pg_url: str) -> None:
    stream = f"rl-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url, timeout=5) as store, SQLStream.from_url(pg_url) as other:
        for item in ("locked", "free1", "free2"):
            await store.set(_set(stream, item, 0))
            await other.set(_set(stream, item, 1))  # the store no longer knows the values: its locking path runs
        session = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            held = session.transaction()
            await held.start()
            await session.fetch("SELECT 1 FROM iii_stream_items WHERE item_key = $1 FOR UPDATE",
                                item_key(stream, "g", "locked"))
            blocked = asyncio.ensure_future(store.set(_set(stream, "locked", 2), timeout=3))
            await asyncio.sleep(0)  # queued first
            start = time.monotonic()
            done = await asyncio.gather(store.set(_set(stream, "free1", 2), timeout=2),
                                        store.set(_set(stream, "free2", 2), timeout=2))
            assert time.monotonic() - start < 1.0  # before (one queue for the store): 2 s, then a timeout
            assert [r.new_value for r in done] == [2, 2]
            assert not blocked.done()
        finally:
            await held.rollback()
            await session.close()
        assert (await blocked).new_value == 2  # the lock gone, its item's write goes through


async def test_two_stores_creating_the_same_items_in_opposite_orders_do_not_deadlock(pg_url: str) -> None:
    stream = f"dl-{uuid.uuid4().hex[:8]}"
    items = [f"i{n:03}" for n in range(60)]
    async with SQLStream.from_url(pg_url) as a, SQLStream.from_url(pg_url) as b:
        for round_ in range(3):
            group = f"{stream}-{round_}"
            results = await asyncio.gather(
                *(a.set(StreamSetInput(stream_name=group, group_id="g", item_id=item, data={"by": "a"}))
                  for item in items),
                *(b.set(StreamSetInput(stream_name=group, group_id="g", item_id=item, data={"by": "b"}))
                  for item in reversed(items)),
                return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors[:3]  # a deadlock fails a whole batch: "deadlock detected"
            assert len(await a.list(StreamListInput(stream_name=group, group_id="g"))) == len(items)


