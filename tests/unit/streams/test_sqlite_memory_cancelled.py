"""An in-memory SQLite store (``sqlite+aiosqlite://``) keeps its data when operations are cancelled or time out.

The database lives in the store's one connection. SQLAlchemy invalidates a connection whose operation a cancellation
interrupted, and the pool then made a new, empty database: every item was gone at the first such cancel (the next
operation said the table does not exist)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams.sql import SQLStream


def _operation(store: SQLStream, kind: int, k: int) -> Awaitable[Any]:
    item = f"i{k % 5}"
    if kind == 0:
        return store.list(StreamListInput(stream_name="keep", group_id="g"))
    if kind == 1:
        return store.get(StreamGetInput(stream_name="keep", group_id="g", item_id="k1"))
    if kind == 2:
        return store.set(StreamSetInput(stream_name="s", group_id="g", item_id=item, data={"n": k}))
    return store.update(StreamUpdateInput(stream_name="s", group_id="g", item_id=item,
                                          ops=[UpdateIncrement(path="n", by=1)]))


async def test_cancelled_operations_leave_the_in_memory_database_whole() -> None:
    rnd = random.Random(7)
    async with SQLStream.from_url("sqlite+aiosqlite://") as store:
        for n in range(20):
            await store.set(StreamSetInput(stream_name="keep", group_id="g", item_id=f"k{n}", data={"n": n}))
        for k in range(300):
            task = asyncio.ensure_future(_operation(store, rnd.randrange(4), k))
            for _ in range(k % 11):  # cancelled at a different point of its work each time
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        kept = await store.list(StreamListInput(stream_name="keep", group_id="g"))
        assert sorted(item["n"] for item in kept) == list(range(20))  # before: the table was gone
