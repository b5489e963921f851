"""PostgreSQL store: a shared batch (writes of several items) puts at most ``_MAX_SHARED_CHARS`` of values in one
transaction, and the writes a hurried caller takes out of a shared batch are counted (``hurry_requeues``).

Before, a batch of big values ran as one transaction of up to 256 values (10 MB of 40 KB values), which held its rows
longer than another store's batch of the same rows waits for one, so that batch handed all its writes on; and the
writes of an item whose caller was in a hurry left the batch for the item's own queue uncounted.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest
from sqlalchemy import event

import iii_streams.sql as sql_module
from iii.stream import StreamGetInput, StreamListInput
from iii_streams import SQLStream
from iii_streams.batching import Requeue
from iii_streams.schema import item_key
from tests.integration.streams.test_pg_group_commit import _set

pytestmark = pytest.mark.timeout(30)


def _updates(store: SQLStream) -> list[tuple[int, int]]:
    """``(rows, characters of their values)`` of each row-value UPDATE the store sends from now on."""
    seen: list[tuple[int, int]] = []

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _on_statement(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                      executemany: bool) -> None:
        if statement.startswith("UPDATE iii_stream_items SET value="):
            rows = parameters if executemany else [parameters]
            # asyncpg's paramstyle: positional, the value first
            seen.append((len(rows), sum(len(row[0]) for row in rows)))

    return seen


async def test_a_batch_of_big_values_commits_in_transactions_of_bounded_size(pg_url: str) -> None:
    # 64 writes of 40 KB in flight (2.5 MB): the 63 after the first share one batch. Before: one transaction with
    # one UPDATE of all 63 values ("AssertionError: [(63, 2521125)]": rows, characters).
    stream = f"sb-{uuid.uuid4().hex[:8]}"
    items = [f"i{n:02}" for n in range(64)]
    bound = sql_module._MAX_SHARED_CHARS
    async with SQLStream.from_url(pg_url) as store:
        await asyncio.gather(*(store.set(_set(stream, item, 0)) for item in items))  # the rows exist: UPDATEs
        updates = _updates(store)
        big = {"blob": "x" * 40_000}
        results = await asyncio.gather(*(store.set(_set(stream, item, {**big, "n": n}))
                                         for n, item in enumerate(items)))
        assert [r.old_value for r in results] == [0] * 64
        shared = [u for u in updates if u[0] > 1]
        assert len(shared) >= math.ceil(63 * 40_000 / bound), updates  # the batch ran as several transactions
        for rows, chars in shared:
            assert chars <= bound, f"{rows} rows, {chars} characters in one transaction"
        # the first write ran alone (compare-and-set, no such UPDATE)
        assert sum(rows for rows, _ in updates) == 63 and store.lock_requeues == 0
        listed = await store.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(value["n"] for value in listed) == list(range(64))


async def test_small_values_still_share_one_transaction(pg_url: str) -> None:
    stream = f"ss-{uuid.uuid4().hex[:8]}"
    items = [f"i{n:03}" for n in range(200)]
    async with SQLStream.from_url(pg_url) as store:
        await asyncio.gather(*(store.set(_set(stream, item, 0)) for item in items))
        updates = _updates(store)
        await asyncio.gather(*(store.set(_set(stream, item, {"pad": "y" * 100})) for item in items))
        # the lone first write ran as a compare-and-set statement; the rest in one transaction
        assert [rows for rows, _ in updates] == [199]


def test_a_shared_transaction_takes_writes_up_to_the_bound_and_at_least_one() -> None:
    store = SQLStream.from_url("postgresql+asyncpg://app@db/app")
    bound = sql_module._MAX_SHARED_CHARS

    def writes(*sizes: int) -> list[sql_module._Write]:
        return [sql_module._Write("s", "g", f"i{n}", item_key("s", "g", f"i{n}"), None, size)
                for n, size in enumerate(sizes)]

    half = bound // 2
    assert store._within_chars(writes(half, half, 1)) == 2  # the third would pass the bound
    assert store._within_chars(writes(3 * bound, 10)) == 1  # one value over the bound still runs, alone
    assert store._within_chars(writes(*[100] * 256)) == 256
    gone = writes(half, half, half)
    gone[1].abandoned = True  # its caller left: its value is not written, so it takes no room
    assert store._within_chars(gone) == 3


async def test_a_hurried_callers_item_leaves_the_batch_and_every_write_of_it_is_counted(pg_url: str) -> None:
    # A shared batch of 64 patient writes of distinct items and three of item z: the first of z's callers gives the
    # batch 10 ms (in a hurry), the second is patient, the third gave up. z's two waiting writes leave the batch for
    # z's own queue (in order); before, no counter showed it (lock_requeues stays 0: no lock failed).
    stream = f"sh-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # connected

        def write(item: str) -> sql_module._Write:
            return sql_module._Write(stream, "g", item, item_key(stream, "g", item), lambda _old: (1, "1"), 1)

        patient = [write(f"i{n:02}") for n in range(64)]
        hurried, after, gave_up = write("z"), write("z"), write("z")
        hurried.deadline = asyncio.get_running_loop().time() + 0.01
        gave_up.abandoned = True
        batch = [*patient[:10], hurried, *patient[10:], after, gave_up]
        answers = await store._shared_batch(batch)
        z = item_key(stream, "g", "z")
        assert [a.key for a in answers[10:11] + answers[-2:]] == [z, z, z]
        assert all(isinstance(a, Requeue) for a in answers[10:11] + answers[-2:])
        assert [a for a in answers[:10] + answers[11:-2]] == [(None, 1)] * 64  # committed together
        assert store.hurry_requeues == 2  # the hurried write and the patient one behind it; not the abandoned
        assert store.lock_requeues == 0
