"""PostgreSQL store: writes of many items waiting together share transactions (group commit, as on SQLite), and two
stores (two processes' pools) creating the same new items in opposite orders never deadlock."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy import event

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput
from iii_streams import SQLStream


def _statements(store: SQLStream) -> list[int]:
    """How many statements the store sends from now on (autocommitted single ones included; one executemany: one)."""
    count = [0]

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _on_statement(*_: Any) -> None:
        count[0] += 1

    return count


def _set(stream: str, item: str, data: Any) -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=data)


async def test_concurrent_writes_of_distinct_items_share_transactions(pg_url: str) -> None:
    stream = f"gc-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # migrated before counting
        await asyncio.gather(*(store.set(_set(stream, f"i{n}", {"n": 0})) for n in range(100)))  # the rows exist
        statements = _statements(store)
        results = await asyncio.gather(*(store.set(_set(stream, f"i{n % 100}", {"n": n})) for n in range(1, 401)))
        # before: a queue per item, so at least one statement (a transaction, or one compare-and-set) per item
        assert statements[0] <= 40, f"{statements[0]} statements for 400 writes of 100 items"
        assert all(r.old_value is not None for r in results)
        listed = await store.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(item["n"] for item in listed) == list(range(301, 401))  # each item's last write won


async def test_two_stores_creating_the_same_items_in_opposite_orders_do_not_deadlock(pg_url: str) -> None:
    stream = f"dl-{uuid.uuid4().hex[:8]}"
    items = [f"i{n:03}" for n in range(60)]
    async with SQLStream.from_url(pg_url) as a, SQLStream.from_url(pg_url) as b:
        for store in (a, b):  # migrated and connected before the race
            await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))
        for round_ in range(5):
            group = f"{stream}-{round_}"
            start = time.monotonic()
            results = await asyncio.gather(
                *(a.set(_set(group, item, {"by": "a"})) for item in items),
                *(b.set(_set(group, item, {"by": "b"})) for item in reversed(items)),
                return_exceptions=True)
            # a deadlock is broken by PostgreSQL after deadlock_timeout (1 s), failing one side's whole batch
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors[:3]
            assert time.monotonic() - start < 0.9
            listed = await a.list(StreamListInput(stream_name=group, group_id="g"))
            assert len(listed) == len(items)
