"""PostgreSQL store: writes of many items waiting together share transactions (the shared queue), and that sharing
keeps what a queue per item gave: a row locked elsewhere stalls only its item (the batch gives the row up after its
lock timeout and hands its writes to their items' own queues), two stores' batches never fail on each other
(deadlock), nothing is lost or applied twice, and an item's writes keep their order across the hand-over."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

import iii_streams.sql as sql_module
from iii.stream import StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import SQLStream
from iii_streams.schema import group_key, item_key, stream_key


def _statements(store: SQLStream) -> list[int]:
    """How many statements the store sends from now on (autocommitted single ones included; one executemany: one)."""
    count = [0]

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _on_statement(*_: Any) -> None:
        count[0] += 1

    return count


def _set(stream: str, item: str, data: Any) -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=data)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _lock_row(session: asyncpg.Connection, stream: str, item: str) -> Any:
    """Hold ``item``'s row lock in ``session`` (as another process's open transaction would) until rolled back."""
    held = session.transaction()
    await held.start()
    await session.fetch("SELECT 1 FROM iii_stream_items WHERE item_key = $1 FOR UPDATE", item_key(stream, "g", item))
    return held


async def _lock_waiters(url: str, at_least: int) -> None:
    """Until at least ``at_least`` sessions of the database wait for a lock (a condition, polled; from a session
    outside any transaction, which would see one snapshot of the activity)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    watcher = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(5):
            while await watcher.fetchval(query) < at_least:  # noqa: ASYNC110 - the server tells no one of a wait
                await asyncio.sleep(0.002)
    finally:
        await watcher.close()


async def test_concurrent_writes_of_distinct_items_share_transactions(pg_url: str) -> None:
    stream = f"gc-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # connected before counting
        await asyncio.gather(*(store.set(_set(stream, f"i{n}", {"n": 0})) for n in range(100)))  # the rows exist
        statements = _statements(store)
        results = await asyncio.gather(*(store.set(_set(stream, f"i{n % 100}", {"n": n})) for n in range(100, 500)))
        # a queue per item: at least one statement (a transaction, or one compare-and-set) per item and round
        assert statements[0] <= 40, f"{statements[0]} statements for 400 writes of 100 items"
        # each item's writes in the order they were made: every one found the one before it
        assert [r.old_value["n"] for r in results] == [0] * 100 + list(range(100, 400))
        listed = await store.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(item["n"] for item in listed) == list(range(400, 500))


async def test_two_stores_writing_overlapping_items_in_opposite_orders_never_fail(pg_url: str) -> None:
    stream = f"dl-{uuid.uuid4().hex[:8]}"
    items = [f"i{n:03}" for n in range(40)]
    bump = [UpdateIncrement(path="n", by=1)]
    rounds, passes = 8, 3
    async with SQLStream.from_url(pg_url) as a, SQLStream.from_url(pg_url) as b:
        start = time.monotonic()
        for round_ in range(rounds):
            fresh = f"{stream}-{round_}"  # created by both at once, then updated: inserts race with locked rows

            def writes(store: SQLStream, order: list[str], fresh: str = fresh) -> list[Any]:
                return [store.update(StreamUpdateInput(stream_name=s, group_id="g", item_id=item, ops=bump))
                        for _ in range(passes) for item in order for s in (fresh, stream)]

            results = await asyncio.gather(*writes(a, items), *writes(b, items[::-1]), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors[:3]  # a deadlock failed a whole batch: "deadlock detected"
            listed = await a.list(StreamListInput(stream_name=fresh, group_id="g"))
            assert sorted(item["n"] for item in listed) == [2 * passes] * len(items)  # none lost, none twice
        listed = await b.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(item["n"] for item in listed) == [2 * passes * rounds] * len(items)
        assert time.monotonic() - start < 20


async def test_a_deadlock_with_another_session_ends_in_the_lock_timeout(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the batch locks r1, then inserts r2, which the other session inserted (uncommitted) and which then asks for r1:
    # a circle PostgreSQL would break after deadlock_timeout (1 s) by failing the batch; the batch's lock timeout
    # (here 0.5 s, room for the other session to close the circle) ends it first and hands its writes on
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MIN_S", 0.5)
    stream = f"cy-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url, timeout=10) as store, SQLStream.from_url(pg_url) as other:
        for item in ("r1", "f0"):
            await other.set(_set(stream, item, 0))
        session = await asyncpg.connect(_plain(pg_url))
        try:
            held = session.transaction()
            await held.start()
            await session.execute(
                "INSERT INTO iii_stream_items (item_key, group_key, stream_key, stream_name, group_id, item_id, value) "
                "VALUES ($1, $2, $3, $4, 'g', 'r2', '\"theirs\"')",
                item_key(stream, "g", "r2"), group_key(stream, "g"), stream_key(stream), stream)
            # f0 alone takes its own queue; r1 and r2 share a batch
            mine = [asyncio.ensure_future(store.set(_set(stream, item, "mine"))) for item in ("f0", "r1", "r2")]
            await _lock_waiters(_plain(pg_url), 1)  # the batch waits for the other session's r2
            await session.fetch("SELECT 1 FROM iii_stream_items WHERE item_key = $1 FOR UPDATE",
                                item_key(stream, "g", "r1"))  # granted once the batch gave r1 up
            await held.commit()
        finally:
            await session.close()
        results = await asyncio.gather(*mine)  # before: 'deadlock detected' for the whole batch
        assert [r.old_value for r in results] == [0, 0, "theirs"]  # r2 written over the other session's row
        assert store.lock_requeues == 2
        listed = await other.list(StreamListInput(stream_name=stream, group_id="g"))
        assert listed == ["mine"] * 3


async def test_a_row_locked_elsewhere_leaves_a_shared_batch_alone(pg_url: str) -> None:
    stream = f"rl-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url, timeout=10) as store, SQLStream.from_url(pg_url) as other:
        for item in ("locked", "f0", "f1", "f2", "f3"):
            await other.set(_set(stream, item, 0))
        session = await asyncpg.connect(_plain(pg_url))
        try:
            held = await _lock_row(session, stream, "locked")
            start = time.monotonic()
            # f0 alone starts its own queue; the three after it share one batch, whose lock wait gives up
            first = [asyncio.ensure_future(store.set(_set(stream, item, 1), timeout=3))
                     for item in ("f0", "locked", "f1", "f2")]
            await asyncio.gather(first[0], first[2], first[3])
            assert time.monotonic() - start < 1.5  # one lock timeout (0.1 s), not the store's 10 s
            assert store.lock_requeues == 3  # locked, f1 and f2 handed to their own queues
            assert set(store._slow) == {item_key(stream, "g", "locked")}  # only the locked row is remembered
            # the locked item is remembered: its next write goes to its own queue, the others' still share
            more = [asyncio.ensure_future(store.set(_set(stream, item, 2), timeout=3))
                    for item in ("f0", "locked", "f1", "f3")]
            await asyncio.gather(more[0], more[2], more[3])
            assert store.lock_requeues == 3
            assert not first[1].done() and not more[1].done()
        finally:
            await held.rollback()
            await session.close()
        assert (await first[1]).old_value == 0 and (await more[1]).old_value == 1  # in order, each exactly once
        assert await other.get(StreamGetInput(stream_name=stream, group_id="g", item_id="locked")) == 2


async def test_an_items_writes_keep_their_order_across_a_hand_over(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a longer lock wait than the store's: room to queue more writes of the item while its batch waits
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MIN_S", 2.0)
    monkeypatch.setattr(sql_module, "_SHARED_LOCK_MAX_S", 2.0)
    stream = f"ord-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url, timeout=10) as store, SQLStream.from_url(pg_url) as other:
        for item in ("x", "f0", "f1", "f2"):
            await other.set(_set(stream, item, 0))
        session = await asyncpg.connect(_plain(pg_url))
        try:
            held = await _lock_row(session, stream, "x")
            first = [asyncio.ensure_future(store.set(_set(stream, item, 1))) for item in ("f0", "x", "f1")]
            await _lock_waiters(_plain(pg_url), 1)  # the shared batch [x, f1] waits for x's row
            # later writes of x queue behind it in the shared queue, with one more item to share a batch with
            later = [asyncio.ensure_future(store.set(_set(stream, item, n))) for item, n in
                     (("x", 2), ("f2", 1), ("x", 3))]
            await asyncio.sleep(0)  # they are queued
            assert store._shared.get(item_key(stream, "g", "x")) == 3  # the batch's x and the two later ones
            await first[2]  # f1 is done once the batch gave up x's row and handed its writes on
            assert store.lock_requeues == 2
            await later[1]
            assert not first[1].done() and not later[0].done() and not later[2].done()
        finally:
            await held.rollback()
            await session.close()
        x1, x2, x3 = await asyncio.gather(first[1], later[0], later[2])
        assert (x1.old_value, x2.old_value, x3.old_value) == (0, 1, 2)  # each found the one before it
        assert await other.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x")) == 3
        assert not store._shared


async def test_a_close_during_a_hand_over_lets_the_handed_writes_run(pg_url: str) -> None:
    # before: the close refused every write the batch handed on ("closed before the write ran"), the writes of
    # rows nobody held among them: accepted writes refused by a graceful close
    stream = f"cl-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as other:
        for item in ("locked", "f0", "f1", "f2"):
            await other.set(_set(stream, item, 0))
        session = await asyncpg.connect(_plain(pg_url))
        try:
            held = await _lock_row(session, stream, "locked")
            store = SQLStream.from_url(pg_url, timeout=1)
            await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # connected
            writes = [asyncio.ensure_future(store.set(_set(stream, item, 1))) for item in ("f0", "locked", "f1", "f2")]
            await _lock_waiters(_plain(pg_url), 1)  # the shared batch [locked, f1, f2] waits for the row
            await store.aclose()  # within the batch's 100 ms lock wait: it hands its writes on as the close runs
            results = await asyncio.gather(*writes, return_exceptions=True)
        finally:
            await held.rollback()
            await session.close()
        assert [r.old_value for r in (results[0], results[2], results[3])] == [0, 0, 0], results
        assert isinstance(results[1], sql_module.StreamTimeoutError)  # its row stayed locked past the timeout
        for item, value in (("f1", 1), ("f2", 1), ("locked", 0)):
            assert await other.get(StreamGetInput(stream_name=stream, group_id="g", item_id=item)) == value


async def test_a_full_shared_queue_sends_new_items_to_their_own_queues(pg_url: str) -> None:
    # before: max_pending counted the whole shared queue, so with it full, writes of other items were refused:
    # "StreamBackendError: ... 5 writes already wait for one key"
    stream = f"mp-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        store._writes._max_pending = 5
        results = await asyncio.gather(*(store.set(_set(stream, f"i{n}", n)) for n in range(40)),
                                       return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        listed = await store.list(StreamListInput(stream_name=stream, group_id="g"))
        assert sorted(listed) == list(range(40))


async def test_a_write_handed_on_after_withdrawal_reruns_can_still_be_withdrawn(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A shared batch re-run twice for callers that gave up pins the writes it keeps; the ones it then hands to their
    # own queue must arrive there neither sent nor pinned, so their callers may still withdraw them. Here the second
    # write of X repeats the first's event, so it waits for the next transaction, where X is the only item left:
    # handed on.
    stream = f"wd-{uuid.uuid4().hex[:8]}"
    arrived: list[tuple[str, bool]] = []
    async with SQLStream.from_url(pg_url, timeout=10) as store:
        for item in ("A", "B", "C", "X", "Z"):
            await store.set(_set(stream, item, 0))
        callers: dict[str, asyncio.Future[Any]] = {}
        applied = 0
        apply_writes = SQLStream._apply_writes

        async def apply_and_give_up(self: SQLStream, conn: Any, writes: Any) -> Any:
            nonlocal applied
            out = await apply_writes(self, conn, writes)
            applied += 1
            if applied in (1, 2):  # a caller gives up while the statements run: the batch runs again without it
                callers["AB"[applied - 1]].cancel()
                await asyncio.sleep(0)
            return out

        swap = SQLStream._swap

        async def seen_on_arrival(self: SQLStream, writes: Any, results: Any) -> Any:
            arrived.extend((w.item_id, w.sent or w.pinned) for w in writes)  # (pinned: kept, not withdrawable)
            return await swap(self, writes, results)

        monkeypatch.setattr(SQLStream, "_apply_writes", apply_and_give_up)
        monkeypatch.setattr(SQLStream, "_swap", seen_on_arrival)
        order = [("Z", 1), ("A", 1), ("B", 1), ("C", 1), ("X", 5), ("X", 5)]
        futures = []
        for item, value in order:
            future = asyncio.ensure_future(store.set(_set(stream, item, value)))
            callers.setdefault(item, future)
            futures.append(future)
        await asyncio.gather(*futures, return_exceptions=True)
    handed = [(item, sent) for item, sent in arrived if item == "X"]
    assert handed and all(not sent for _, sent in handed), arrived  # before: ('X', True)


async def test_a_shared_batch_commits_without_the_lock_timeout(pg_url: str) -> None:
    # A commit that sends notifications takes the database's notification-queue lock, in turn with every other
    # such commit. Under the batch's 100 ms lock timeout, a burst of another session's notifications (no row locked)
    # made shared batches fail at COMMIT and hand hundreds of writes on; the limit is lifted before the commit.
    stream = f"nt-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as store:
        await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # connected before counting
        await asyncio.gather(*(store.set(_set(stream, f"i{n}", 0)) for n in range(20)))
        transactions: list[list[str]] = [[]]

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def _on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            transactions[-1].append(statement)

        @event.listens_for(store.engine.sync_engine, "commit")
        def _on_commit(_conn: Any) -> None:
            transactions.append([])

        await asyncio.gather(*(store.set(_set(stream, f"i{n % 20}", n)) for n in range(20, 100)))
    shared = [statements for statements in transactions
              if any("set_config('lock_timeout'" in s and "'0'" not in s for s in statements)]
    assert shared, "no shared batch ran"
    for statements in shared:
        assert "set_config('lock_timeout', '0', true)" in statements[-1], statements  # the last before COMMIT
