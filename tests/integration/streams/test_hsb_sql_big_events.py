"""SQLStream on PostgreSQL: custom events and deletes over NOTIFY's 8000-byte limit reach every watcher exact.

Before: such an event was sent without its data (``"truncated": true``) and the watcher could only read create
and update values back from the table, so a big ``send`` or delete reached every watcher with ``data: None`` and no
error. Now an event that does not fit one notification is sent in parts, in one transaction (PostgreSQL delivers
a transaction's notifications together and in order), and the store's LISTEN connection joins them once for all
its watchers: each gets exactly what the memory store emits (the delete's old value, the custom event's data),
without a query. A broken run of parts (only a foreign sender makes one) is a ``StreamGapError``, never a None.
(Big creates and updates are sent in parts too since: test_sql_watch_big_exact.py.)
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from iii.stream import StreamDeleteInput, StreamSetInput
from iii.wire import dumps
from iii_streams import MemoryStream, SQLStream, StreamGapError
from iii_streams.events import Watch, make_event, now_ms
from iii_streams.schema import item_key
from tests.integration.streams.test_sql_watch_shared import _terminate_listen
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

BIG: Any = {"blob": "x" * 100_000, "order": [3, 2, 1], "big": 2**70}
# multi-byte characters across every part boundary (2, 3 and 4 UTF-8 bytes)
WIDE: Any = {"text": "é" * 5000 + "€" * 3000 + "😀" * 3000 + "z"}


@pytest.fixture
def name() -> str:
    return f"hsb{uuid.uuid4().hex[:12]}"


def _store(url: str, app: str, **options: Any) -> SQLStream:
    engine = create_async_engine(url, connect_args={"server_settings": {"application_name": app}})
    return SQLStream(engine, owns_engine=True, **options)


def _selects(store: SQLStream) -> list[str]:
    seen: list[str] = []

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "pg_notify" not in statement:
            seen.append(statement)

    return seen


async def _watches(store: SQLStream, n: int, stream: str | None) -> list[Watch]:
    watches = [store.watch(stream_name=stream) for _ in range(n)]
    for watch in watches:
        await watch.open()
    return watches


async def _next(watch: Watch) -> Any:
    return await asyncio.wait_for(anext(watch), 10)


async def _memory_events(stream: str, group: str, actions: Any) -> list[Any]:
    """What the memory store emits for the same actions (the contract), without timestamps."""
    memory = MemoryStream()
    async with memory.watch(stream_name=stream) as watch:
        count = await actions(memory)
        return [_untimed(await _next(watch)) for _ in range(count)]


def _untimed(ev: Any) -> Any:
    assert isinstance(ev.pop("timestamp"), int)
    return ev


async def test_big_delete_and_custom_events_reach_every_watcher_exact(pg_url: str, name: str) -> None:
    """20 watchers, a 100 KB delete and 100 KB custom events: each watcher gets the memory store's events, its
    own copy of the data, and no watcher reads the table. Before: all three arrived with data None."""
    async def create(store: Any) -> int:
        await store.set(StreamSetInput(stream_name=name, group_id="g", item_id="i", data=BIG))
        return 1

    async def rest(store: Any) -> int:
        await store.delete(StreamDeleteInput(stream_name=name, group_id="g", item_id="i"))
        await store.send(name, "g", None, "big", BIG)
        await store.send(name, "g", "i", "wide", WIDE)
        return 3

    async def both(store: Any) -> int:
        return await create(store) + await rest(store)

    expected = await _memory_events(name, "g", both)
    assert [e["event"]["type"] for e in expected] == ["create", "delete", "event", "event"]
    async with _store(pg_url, name) as store:
        watches = await _watches(store, 20, name)
        try:
            selects = _selects(store)
            await create(store)
            got = [[_untimed(await _next(watch))] for watch in watches]
            await rest(store)
            for watch, events in zip(watches, got, strict=True):
                events.extend([_untimed(await _next(watch)) for _ in range(3)])
        finally:
            for watch in watches:
                await watch.aclose()
    assert got == [expected] * 20
    assert len({id(events[1]["event"]["data"]) for events in got}) == 20  # no two watchers share one value
    # the writes' own SELECT … FOR UPDATE only: nothing read back (a big create is sent in parts too)
    assert [s for s in selects if s.startswith("SELECT") and "FOR UPDATE" not in s] == []


def older_notification(stream: str, group: str, item: str, *, ref: bool = False) -> str:
    """What an older version of the store sent for a create over 8000 bytes: the event without its data
    (``"truncated": true``), or only the row's key when the names alone were too long (``ref``)."""
    inner = {"type": "create", "data": None}
    if ref:
        return dumps({"type": "stream", "timestamp": now_ms(), "ref": item_key(stream, group, item).hex(),
                      "truncated": True, "event": inner})
    return dumps({**make_event(stream, group, item, "create", None), "truncated": True})


def older_writer(url: str, app: str) -> SQLStream:
    """A store that writes rows without notifying: with :func:`older_notification` and :func:`_notify`, an older
    version's big create (its own notifications would reach the watchers too)."""
    return _store(url, app, publish_events=False)


async def test_an_older_writers_big_create_whose_item_is_gone_before_it_is_read_back_is_a_gap_error(
        pg_url: str, name: str) -> None:
    """An older version sent a big create without its data, to be read back from its row; deleted first, the
    watcher got the create with data None and no error. Still read back (a mixed deployment), and now a
    StreamGapError says so; the delete that follows (this version's, in parts) is exact."""
    async with (_store(pg_url, name) as store, older_writer(pg_url, name) as older,
                store.watch(stream_name=name) as watch):
        await older.set(StreamSetInput(stream_name=name, group_id="g", item_id="i", data=BIG))
        await _notify(pg_url, older_notification(name, "g", "i"))
        await store.delete(StreamDeleteInput(stream_name=name, group_id="g", item_id="i"))
        with pytest.raises(StreamGapError, match="deleted before its value could be read back"):
            await _next(watch)
        assert (await _next(watch))["event"] == {"type": "delete", "data": BIG}


async def test_an_older_writers_event_sent_without_its_data_is_a_gap_error(pg_url: str, name: str) -> None:
    """A delete or custom event an older version sent without its data (it cannot be read back) was delivered
    with data None; now it is a StreamGapError, and the watch reads on."""
    head = '{"type":"stream","timestamp":1,"streamName":"' + name + '","groupId":"g","id":"i",'
    async with _store(pg_url, name) as store, store.watch(stream_name=name) as watch:
        await _notify(pg_url, head + '"event":{"type":"delete","data":null},"truncated":true}')
        await _notify(pg_url, head + '"event":{"type":"event","event":{"type":"x","data":null},"data":null},'
                                     '"truncated":true}')
        await store.send(name, "g", None, "after", 1)
        for kind in ("delete", "event"):
            with pytest.raises(StreamGapError, match=f"a '{kind}' event was sent without its data"):
                await _next(watch)
        assert (await _next(watch))["event"]["event"] == {"type": "after", "data": 1}


async def test_big_events_with_names_too_long_for_a_notification(pg_url: str, name: str) -> None:
    """Names alone over the limit: a custom event without an id was not sent at all (a warning only), a delete
    came back with data None. Now both arrive whole."""
    stream = name + "s" * 9000
    async with _store(pg_url, name) as store, store.watch(stream_name=stream) as watch:
        await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="i", data=[1]))
        got = [await _next(watch)]
        await store.delete(StreamDeleteInput(stream_name=stream, group_id="g", item_id="i"))
        await store.send(stream, "g", None, "ping", {"n": 1})
        got += [await _next(watch) for _ in range(2)]
    assert [e["event"] for e in got] == [{"type": "create", "data": [1]}, {"type": "delete", "data": [1]},
                                         {"type": "event", "event": {"type": "ping", "data": {"n": 1}}}]
    assert {(e["streamName"], e["groupId"]) for e in got} == {(stream, "g")}


async def test_big_events_of_concurrent_writers_arrive_whole(pg_url: str, name: str) -> None:
    """Four stores (four connections) delete big items and send big events at once, so their transactions' parts
    are sent concurrently: every event reaches the watcher of a fifth store whole and once, each writer's sends in
    their order."""
    writers = [_store(pg_url, name) for _ in range(4)]
    async with _store(pg_url, name) as reader, reader.watch(stream_name=name) as watch:
        try:
            for w, store in enumerate(writers):
                await asyncio.gather(*(store.set(StreamSetInput(stream_name=name, group_id=str(w), item_id=str(i),
                                                                data={"w": w, "i": i, "pad": "p" * 9000}))
                                       for i in range(10)))
            for _ in range(40):
                await _next(watch)  # the creates

            async def write(w: int, store: SQLStream) -> None:
                await asyncio.gather(*(store.delete(StreamDeleteInput(stream_name=name, group_id=str(w),
                                                                      item_id=str(i))) for i in range(10)))
                for i in range(5):
                    await store.send(name, str(w), None, "blob", {"w": w, "i": i, "pad": "q" * 20_000})

            await asyncio.gather(*(write(w, store) for w, store in enumerate(writers)))
            got = [await _next(watch) for _ in range(60)]
        finally:
            for store in writers:
                await store.aclose()
    deletes = sorted((e["groupId"], e["id"], e["event"]["data"]["i"]) for e in got if e["event"]["type"] == "delete")
    assert deletes == sorted((str(w), str(i), i) for w in range(4) for i in range(10))
    for w in range(4):
        sent = [e["event"]["event"]["data"] for e in got if e["event"]["type"] == "event" and e["groupId"] == str(w)]
        assert sent == [{"w": w, "i": i, "pad": "q" * 20_000} for i in range(5)]


async def test_big_events_count_once_in_a_watchers_queue(pg_url: str, name: str) -> None:
    """An event in 13 parts takes one place in a watcher's queue: 2 of them fit a queue of 2, no lag."""
    async with _store(pg_url, name, watch_queue_size=2) as store, store.watch(stream_name=name) as watch:
        await store.send(name, "g", None, "a", BIG)
        await store.send(name, "g", None, "b", BIG)
        sub: Any = watch._sub
        await until(lambda: sub._queue.full())
        assert [(await _next(watch))["event"]["event"]["type"] for _ in range(2)] == ["a", "b"]
        assert not sub._lagged


async def _notify(url: str, *payloads: str) -> None:
    """Send ``payloads`` in one transaction, as a foreign process on the store's channel could."""
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute("SELECT pg_notify('iii_streams_events', p) FROM unnest($1::text[]) AS p", list(payloads))
    finally:
        await conn.close()


async def test_a_broken_run_of_parts_is_a_gap_error_then_the_watch_goes_on(pg_url: str, name: str) -> None:
    """Parts that do not make an event (one missing, one alone) are each reported as a StreamGapError, never
    delivered as an event or dropped silently; the watch then delivers later events."""
    part = '{"type":"stream","timestamp":1,"streamName":"' + name + '","groupId":"g","id":null,"event":'
    async with _store(pg_url, name) as store, store.watch(stream_name=name) as watch:
        listener: Any = store._listener
        # a run missing its middle part, then a lone last part
        await _notify(pg_url, f"~aaaa.0.3|{part}", '~aaaa.2.3|{"type":"x","data":1}}')
        await _notify(pg_url, '~bbbb.1.2|{"type":"x","data":1}}')
        await store.send(name, "g", None, "after", {"n": 1})
        for _ in range(2):
            with pytest.raises(StreamGapError, match="in parts"):
                await _next(watch)
        assert (await _next(watch))["event"]["event"] == {"type": "after", "data": {"n": 1}}
        assert listener._parts is None


async def test_parts_cut_by_a_lost_connection_are_forgotten(pg_url: str, name: str) -> None:
    """A connection ended midway through an event's parts: the new connection starts afresh (the lost event is
    the outage's gap), and the half-joined event neither leaks nor breaks the next one."""
    async with _store(pg_url, name, report_watch_gaps=True) as store, store.watch(stream_name=name) as watch:
        listener: Any = store._listener
        first = listener.driver
        await _notify(pg_url, '~cccc.0.2|{"type":"stream"')
        await until(lambda: listener._parts is not None)
        assert await _terminate_listen(name) == 1
        await until(lambda: listener.driver not in (None, first))
        assert listener._parts is None
        await store.send(name, "g", None, "after", BIG)
        with pytest.raises(StreamGapError, match="LISTEN connection"):
            await _next(watch)
        assert (await _next(watch))["event"]["event"] == {"type": "after", "data": BIG}
