"""PostgreSQL store: how long a shared batch (writes of several items in one transaction) waits for a row lock
before it hands its writes to their items' own queues.

Before, always 100 ms: a store or call timeout below that let a row locked elsewhere time out EVERY write of the
batch (the free items' too: the batch's deadline came before its lock timeout), and a store's batch of big values
waiting for another store's batch of the same rows (holding them for well over 100 ms) handed all its writes on
and kept the items out of the shared queue for 3 s, for nothing. Now the wait grows with the batch's size (bounded
well below PostgreSQL's 1 s deadlock_timeout) and is at most a share of the time its writes have left.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import iii_streams.sql as sql_module
from iii.stream import StreamGetInput, StreamListInput
from iii_streams import SQLStream, StreamTimeoutError
from iii_streams.schema import item_key
from tests.integration.streams.test_pg_group_commit import _lock_row, _lock_waiters, _plain, _set

pytestmark = pytest.mark.timeout(30)


async def _connected(store: SQLStream, stream: str, connections: int) -> None:
    """Open ``connections`` pooled connections now (with room to spare), so none is opened within a short timeout."""
    await asyncio.gather(*(store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"), timeout=10)
                           for _ in range(connections)))


def _hold_batches_of(store: SQLStream, monkeypatch: pytest.MonkeyPatch, until: Callable[[], Awaitable[None]],
                     hold_s: float) -> asyncio.Event:
    """Make ``store``'s transactions of several writes hold their rows, once written, until ``until()`` returns and
    ``hold_s`` seconds more (the time such a batch holds them: what is measured, not a synchronisation); the event
    is set once one holds them."""
    holding = asyncio.Event()
    apply_writes = SQLStream._apply_writes

    async def slow(self: SQLStream, conn: Any, writes: Any) -> Any:
        out = await apply_writes(self, conn, writes)
        if self is store and len(writes) > 1:
            holding.set()
            await until()
            await asyncio.sleep(hold_s)
        return out

    monkeypatch.setattr(SQLStream, "_apply_writes", slow)
    return holding


@pytest.mark.parametrize("bound", ["store", "call"])
async def test_a_timeout_below_the_lock_wait_fails_only_the_write_whose_row_stays_locked(
        pg_url: str, bound: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The wait a batch's size calls for (2 s here; at least 0.1 s, whatever the size) longer than the time its
    # writes have: before, every write of the shared batch [locked, f1, f2] failed ("did not finish within 0.5 s"),
    # f1's and f2's rows being free. Scaled up from the real case (a 0.09 s timeout, a 0.1 s wait) for room on a
    # loaded machine.
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MIN_S", 2.0)
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MAX_S", 2.0)
    stream = f"tl-{uuid.uuid4().hex[:8]}"
    limit = 0.5
    store_options = {"timeout": limit} if bound == "store" else {}
    call_timeout = limit if bound == "call" else None
    async with SQLStream.from_url(pg_url, **store_options) as store, SQLStream.from_url(pg_url) as other:
        for item in ("locked", "f0", "f1", "f2"):
            await other.set(_set(stream, item, 0))
        await _connected(store, stream, 4)
        session = await asyncpg.connect(_plain(pg_url))
        try:
            held = await _lock_row(session, stream, "locked")
            # f0 alone starts its own queue; the three after it share one batch, which meets the locked row
            results = await asyncio.gather(*(store.set(_set(stream, item, 1), timeout=call_timeout)
                                             for item in ("f0", "locked", "f1", "f2")), return_exceptions=True)
        finally:
            await held.rollback()
            await session.close()
        assert isinstance(results[1], StreamTimeoutError), results  # its row stayed locked past its timeout
        assert [getattr(r, "old_value", r) for r in (results[0], results[2], results[3])] == [0, 0, 0], results
        assert store.lock_requeues == 3  # the batch gave the row up in time and handed its writes on
        listed = await other.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(listed) == [0, 1, 1, 1]  # the locked item's timed-out write was withdrawn


async def test_a_batch_of_big_values_waits_for_another_stores_batch_of_the_same_rows(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Store a's batch holds the rows for 0.25 s (a batch of big values on a busy server takes that long), while
    # store b's batch of the same items, 128 values of 40 KB, waits for them. Before: b gave up after 0.1 s,
    # handed its writes on and kept the items out of its shared queue for 3 s ("lock_requeues == 127").
    stream = f"bg-{uuid.uuid4().hex[:8]}"
    items = [f"i{n:03}" for n in range(128)]
    async with SQLStream.from_url(pg_url) as a, SQLStream.from_url(pg_url) as b:
        await asyncio.gather(*(a.set(_set(stream, item, 0)) for item in items))
        await _connected(b, stream, 2)
        # a's batch holds the rows from when b's batch waits for them
        holding = _hold_batches_of(a, monkeypatch, lambda: _lock_waiters(_plain(pg_url), 1), 0.25)
        big = {"blob": "x" * 40_000}
        first = [asyncio.ensure_future(a.set(_set(stream, item, {"by": "a"}))) for item in items]
        await holding.wait()
        second = [asyncio.ensure_future(b.set(_set(stream, item, {**big, "by": "b"}))) for item in items]
        await asyncio.gather(*first, *second)
        assert b.lock_requeues == 0
        assert not b._slow  # no item kept out of the shared queue
        listed = await a.list(StreamListInput(stream_name=stream, group_id="g"))
        assert len(listed) == len(items) and all(value == {**big, "by": "b"} for value in listed)


def test_the_lock_wait_grows_with_the_batch_and_keeps_within_its_bounds() -> None:
    wait = sql_module._shared_lock_wait
    assert wait(3, 30, None) == sql_module._SHARED_LOCK_MIN_S  # a small batch: the floor
    small, big = wait(256, 256 * 100, None), wait(64, 64 * 40_000, None)
    assert sql_module._SHARED_LOCK_MIN_S <= small < 0.11 < big < sql_module._SHARED_LOCK_MAX_S  # 256 small: as before
    assert wait(256, 256 * 40_000, None) == sql_module._SHARED_LOCK_MAX_S < 1.0  # under deadlock_timeout
    assert wait(256, 256 * 40_000, 0.09) < 0.09 / 2  # a share of the time left, room to hand on
    assert wait(256, 256 * 40_000, 0.0) > 0  # never 0 (PostgreSQL's "no limit")


async def test_updates_of_unknown_size_count_as_the_last_shared_transactions_values(pg_url: str) -> None:
    # an update's value is known only once its row is read (under the lock): the store counts it as the mean value
    # of its last shared transaction, so a batch updating big items waits as long as one setting them
    stream = f"us-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await asyncio.gather(*(store.set(_set(stream, f"i{n}", {"blob": "x" * 40_000})) for n in range(64)))
        assert store._shared_value_size > 40_000  # the 63 writes after the first shared one transaction
        updates = [sql_module._Write(stream, "g", f"i{n}", item_key(stream, "g", f"i{n}"), lambda old: (old, ""))
                   for n in range(64)]
        sets = [sql_module._Write(stream, "g", f"i{n}", item_key(stream, "g", f"i{n}"), None, 40_000)
                for n in range(64)]
        assert store._lock_wait(updates, math.inf) == pytest.approx(store._lock_wait(sets, math.inf), rel=0.01)
        assert store._lock_wait(updates, math.inf) > 2 * sql_module._SHARED_LOCK_MIN_S
