"""SQLStream on PostgreSQL: creates and updates over NOTIFY's 8000 bytes reach every watcher exactly as written.

Before: such a create or update was sent without its data (``"truncated": true``) and the store's watchers read
the row back once. A row deleted before that read was a ``StreamGapError`` for every watcher (the engine's stream
socket answers a gap by closing all its clients with 1013: one big create deleted at once made a reconnect storm);
a row written again before that read gave the earlier event the later value (create(v2), update(v2) instead of
create(v1), update(v2)). Now they are sent in parts, as deletes and custom events already were, by the statement or
transaction that writes them: only if it commits, in the order of the writes, with no read-back.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import event

from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams import sql as sql_module
from tests.integration.streams.test_hsb_sql_big_events import (
    BIG,
    WIDE,
    _memory_events,
    _next,
    _selects,
    _store,
    _untimed,
    _watches,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def name() -> str:
    return f"hpgx{uuid.uuid4().hex[:12]}"


def _big(tag: Any, size: int = 30_000) -> dict[str, Any]:
    """A distinct value over one notification (4 parts at the default size)."""
    return {"tag": tag, "pad": "p" * size}


def _set(name: str, data: Any, item: str = "i") -> StreamSetInput:
    return StreamSetInput(stream_name=name, group_id="g", item_id=item, data=data)


def _notify_statements(store: SQLStream) -> list[tuple[str, list[str]]]:
    """Every statement of ``store`` that sends notifications: (its first word, the payloads it sends)."""
    seen: list[tuple[str, list[str]]] = []

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "pg_notify" in statement:
            lists = [p for p in parameters if isinstance(p, list)]
            seen.append((statement.split(None, 1)[0].upper(), lists[0] if lists else []))

    return seen


async def test_a_big_create_deleted_at_once_reaches_every_watcher_exact_without_a_gap(pg_url: str,
                                                                                      name: str) -> None:
    """Before: the create's read-back found no row, a StreamGapError for each watcher. Now each of 5 watchers gets
    what the memory store emits (create with the exact value, then the delete), and nothing is read back."""
    async def actions(store: Any) -> int:
        await store.set(_set(name, BIG))
        await store.delete(StreamDeleteInput(stream_name=name, group_id="g", item_id="i"))
        return 2

    expected = await _memory_events(name, "g", actions)
    async with _store(pg_url, name) as store:
        watches = await _watches(store, 5, name)
        try:
            selects = _selects(store)
            await actions(store)
            got = [[_untimed(await _next(watch)) for _ in range(2)] for watch in watches]
        finally:
            for watch in watches:
                await watch.aclose()
    assert got == [expected] * 5
    # the writes' own SELECT … FOR UPDATE only: nothing read back for the watchers
    assert [s for s in selects if s.startswith("SELECT") and "FOR UPDATE" not in s] == []


async def test_big_writes_of_one_item_before_the_watcher_reads_arrive_with_their_own_values(pg_url: str,
                                                                                            name: str) -> None:
    """Before: create(v1) then update(v2) (then update(v3)) all written before the watcher read: the create was
    read back as v2 or later. Now each event carries the value its write wrote (multi-byte text too)."""
    v1, v2, v3 = _big(1), _big(2, 100_000), WIDE
    async with _store(pg_url, name) as store, store.watch(stream_name=name) as watch:
        results = [await store.set(_set(name, v)) for v in (v1, v2, v3)]
        got = [(await _next(watch))["event"] for _ in range(3)]
    assert got == [{"type": "create", "data": v1}, {"type": "update", "data": v2}, {"type": "update", "data": v3}]
    assert [r.old_value for r in results] == [None, v1, v2]


async def test_a_batch_of_big_writes_in_one_compare_and_set_statement_is_sent_whole(pg_url: str, name: str) -> None:
    """The item's small value is known, so 8 concurrent big sets run as ONE compare-and-set statement: it carries
    every event's parts, and the watcher of another store gets the 8 updates exact and in order."""
    values = [_big(i, 9_000 * (i % 3 + 1)) for i in range(8)]
    async with _store(pg_url, name) as watcher, _store(pg_url, name) as store, watcher.watch(stream_name=name) as watch:
        await store.set(_set(name, {"small": 0}))  # remembered: the next batch may swap
        sent = _notify_statements(store)
        results = await asyncio.gather(*(store.set(_set(name, v)) for v in values))
        got = [(await _next(watch))["event"] for _ in range(9)]
    assert [kind for kind, _ in sent] == ["WITH"]  # one statement: the write and its notifications together
    assert len(sent[0][1]) > len(values)  # in parts
    assert got == [{"type": "create", "data": {"small": 0}}] + [{"type": "update", "data": v} for v in values]
    assert [r.old_value for r in results] == [{"small": 0}, *values[:-1]]
    assert store.swap_misses == 0


async def test_a_compare_and_set_that_misses_sends_none_of_its_parts(pg_url: str, name: str) -> None:
    """Store A remembers a small value; store B then writes a big one, so A's one-statement big write writes
    nothing and sends none of its parts; the locking transaction applies it. The watcher gets exactly create,
    B's update, A's update, then a marker: no event of the missed attempt, each with its own value."""
    async with (_store(pg_url, name) as watcher, _store(pg_url, name) as a, _store(pg_url, name) as b,
                watcher.watch(stream_name=name) as watch):
        await a.set(_set(name, {"small": 0}))
        await b.set(_set(name, _big("b")))
        sent = _notify_statements(a)
        result = await a.set(_set(name, _big("a")))
        await a.set(_set(name, "done", item="marker"))
        got = [await _next(watch) for _ in range(4)]
    assert a.swap_misses == 1
    assert result.old_value == _big("b")
    assert [kind for kind, _ in sent] == ["WITH", "SELECT", "SELECT"]  # the miss, the transaction, the marker
    assert [e["event"] for e in got[:3]] == [{"type": "create", "data": {"small": 0}},
                                             {"type": "update", "data": _big("b")},
                                             {"type": "update", "data": _big("a")}]
    assert got[3]["id"] == "marker"


async def test_a_transaction_rolled_back_after_its_notifications_sends_none_of_their_parts(pg_url: str,
                                                                                         name: str) -> None:
    """A caller gives up after its batch's statements (the parts' pg_notify among them) ran: the batch rolls back
    and runs again without that write. The watcher gets only the committed writes' events, each with its own value,
    then a marker: no part of the rolled-back transaction, no broken run, no gap."""
    v0, v1, v2 = _big(0), _big(1), _big(2)
    async with _store(pg_url, name) as watcher, _store(pg_url, name) as store, watcher.watch(stream_name=name) as watch:
        await store.get(StreamGetInput(stream_name=name, group_id="g", item_id="i"))  # schema ready
        original = store._apply_writes
        callers: list[asyncio.Task[Any]] = []
        sent = _notify_statements(store)

        async def apply_then_the_first_gives_up(conn: Any, writes: Any) -> Any:
            step = await original(conn, writes)
            if not callers[0].done():
                callers[0].cancel()
                await asyncio.sleep(0)  # the caller sees its cancel before the batch goes on
            return step

        store._apply_writes = apply_then_the_first_gives_up  # type: ignore[method-assign]
        callers.extend(asyncio.create_task(store.set(_set(name, v))) for v in (v0, v1, v2))
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        await store.set(_set(name, "done", item="marker"))
        got = [await _next(watch) for _ in range(3)]
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert [r.old_value for r in outcomes[1:]] == [None, v1]  # type: ignore[union-attr]
    assert len(sent) == 3  # the rolled-back run's notifications were sent to the server, and dropped there
    assert [e["event"] for e in got[:2]] == [{"type": "create", "data": v1}, {"type": "update", "data": v2}]
    assert got[2]["id"] == "marker"


async def test_contended_big_writes_of_two_stores_arrive_in_commit_order_with_their_own_values(pg_url: str,
                                                                                              name: str) -> None:
    """Two stores (two connections) each write 6 big values to one item at once, in batches and transactions that
    interleave: the watcher of a third store gets 12 events, each with the value its write wrote, in the order
    the writes committed (each write's old value is the previous event's value)."""
    writers = [_store(pg_url, name) for _ in range(2)]
    async with _store(pg_url, name) as reader, reader.watch(stream_name=name) as watch:
        try:
            async def write(w: int, store: SQLStream) -> list[Any]:
                return list(await asyncio.gather(*(store.set(_set(name, _big(f"{w}.{i}"))) for i in range(6))))

            results = [r for rs in await asyncio.gather(*(write(w, s) for w, s in enumerate(writers))) for r in rs]
            got = [(await _next(watch))["event"] for _ in range(12)]
        finally:
            for store in writers:
                await store.aclose()
    old_of = {r.new_value["tag"]: r.old_value for r in results}
    assert sorted(e["data"]["tag"] for e in got) == sorted(old_of)  # each write's event, once
    previous = None
    for e in got:
        assert e["type"] == ("create" if previous is None else "update")
        assert old_of[e["data"]["tag"]] == previous  # the value it wrote, right after the one it replaced
        previous = e["data"]


async def test_notifications_go_in_statements_of_bounded_size_in_one_transaction(
        pg_url: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL refuses a statement's parameters over 1 GB, which a batch of big values in parts would reach: at
    most _NOTIFY_CHUNK notifications per statement (3 here), all in the writing transaction. A batch too big for
    one compare-and-set statement takes the locking transaction; a big ``send`` is one transaction too."""
    monkeypatch.setattr(sql_module, "_NOTIFY_CHUNK", 3)
    values = [_big(i) for i in range(3)]
    async with _store(pg_url, name) as watcher, _store(pg_url, name) as store, watcher.watch(stream_name=name) as watch:
        await store.set(_set(name, {"small": 0}))
        sent = _notify_statements(store)
        await asyncio.gather(*(store.set(_set(name, v)) for v in values))
        await store.send(name, "g", None, "big", BIG)
        got = [(await _next(watch))["event"] for _ in range(5)]
    assert got == [{"type": "create", "data": {"small": 0}}, *({"type": "update", "data": v} for v in values),
                   {"type": "event", "event": {"type": "big", "data": BIG}}]
    assert {kind for kind, _ in sent} == {"SELECT"}  # no compare-and-set statement: it would exceed the bound
    assert len(sent) > 2 and max(len(payloads) for _, payloads in sent) <= 3
