"""Second-round attack on the PostgreSQL watch's shared LISTEN connection (R-PG), against a real server.

Faults found, each failing before its fix in ``iii_streams/sql.py``:
- a LISTEN connection the server ended after it was made but before the store took it (its termination listener
  not yet attached) was taken anyway: every watcher stayed deaf for good, nothing reconnected;
- a full watcher queue dropped its OLDEST queued event to make room for a wake-up nobody waited for: a watcher
  with 3 events queued read 2 of them, then its lag (or the gap of an outage turned lag);
- an event sent without its data (over 8000 bytes; since, only an older version sends one) was read back once per
  watcher: 20 watchers, 20 queries;
- a connect that hung (a server that accepts and never answers) went on in the background after the store's
  timeout until the driver's own 60 s, and a watcher's close waited 2 s for a hung reconnect.
The rest (races of the last watcher's close with new watches, cancellations, a killed connection, the store closed
during a reconnect's backoff) held; the stress test keeps it so.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from iii.stream import StreamSetInput
from iii_streams import SQLStream, StreamError, StreamGapError, StreamLagError, StreamTimeoutError
from iii_streams import sql as sql_module
from iii_streams.errors import StreamUnavailableError
from iii_streams.events import Watch
from iii_streams.schema import TABLE_NAME
from tests.integration.streams.pg_database import admin
from tests.integration.streams.test_hsb_sql_big_events import _notify, older_notification, older_writer
from tests.integration.streams.test_sql_watch_shared import _backends, _terminate_listen, until_backends
from tests.polling import until
from tests.services import require_postgres
from tests.stall_relay import Relay

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> str:
    return f"rpg{uuid.uuid4().hex[:12]}"


def _store(url: str, app: str, **options: Any) -> SQLStream:
    engine = create_async_engine(url, connect_args={"server_settings": {"application_name": app}})
    return SQLStream(engine, owns_engine=True, **options)


def _set(n: Any, stream: str = "rpg", item: str = "i") -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=n)


async def _data(watch: Watch) -> Any:
    async with asyncio.timeout(5):
        return (await anext(watch))["event"]["data"]


async def _terminate_pid(pid: int) -> None:
    conn = await asyncpg.connect(require_postgres())
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def _terminate_all(app: str) -> int:
    conn = await asyncpg.connect(require_postgres())
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app))
    finally:
        await conn.close()


def _end_the_next_connection_as_it_is_made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes the next LISTEN connection end (pg_terminate_backend) after it listens, before the store takes it;
    the list gets its server pid."""
    ended: list[int] = []
    connect = sql_module._Listener._connect

    async def connect_then_end(self: Any) -> Any:
        driver = await connect(self)
        if not ended:
            ended.append(driver.get_server_pid())
            await _terminate_pid(ended[0])
            await until(driver.is_closed)  # the client saw it end, before the store took the connection
        return driver

    monkeypatch.setattr(sql_module._Listener, "_connect", connect_then_end)
    return ended


async def test_a_reconnect_whose_connection_ends_as_it_is_made_connects_again(
        pg_url: str, app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the dead connection became the listener's, no termination listener ever fired for it, and the
    watcher never saw another event. Now: the attempt counts as failed, is retried, and the watcher gets ONE gap
    for the one outage, then the later write."""
    async with _store(pg_url, app, report_watch_gaps=True) as store, store.watch(stream_name="made") as watch:
        listener: Any = store._listener
        first = listener.driver
        ended = _end_the_next_connection_as_it_is_made(monkeypatch)
        assert await _terminate_listen(app) == 1
        await until(lambda: listener.driver not in (None, first) and not listener.driver.is_closed())
        assert ended and listener.driver.get_server_pid() != ended[0]
        await store.set(_set(1, "made"))
        with pytest.raises(StreamGapError):
            await _data(watch)
        assert await _data(watch) == 1  # one gap for the outage, not one per attempt


async def test_a_first_watch_whose_connection_ends_as_it_is_made_fails_clearly(
        pg_url: str, app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the watch opened on the dead connection and waited for good. Now: its one attempt fails, naming why;
    the next watch listens."""
    async with _store(pg_url, app) as store:
        ended = _end_the_next_connection_as_it_is_made(monkeypatch)
        with pytest.raises(StreamUnavailableError, match="ended the LISTEN connection as it was made"):
            await store.watch(stream_name="made").open()
        assert ended
        async with store.watch(stream_name="made") as watch:
            await store.set(_set(2, "made"))
            assert await _data(watch) == 2


async def test_a_full_queue_keeps_its_events_and_reports_the_lag_after_them(pg_url: str, app: str) -> None:
    """Before: the 4th event found the queue (3) full and the wake-up made room by dropping event 0: the watcher
    read [1, 2] and then the lag. Now it reads [0, 1, 2], then the lag."""
    async with _store(pg_url, app, watch_queue_size=3) as store, store.watch(stream_name="full") as watch:
        for n in range(4):
            await store.set(_set(n, "full", str(n)))
        sub: Any = watch._sub
        await until(lambda: sub._lagged)
        assert [await _data(watch) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(StreamLagError, match="more than 3 events behind"):
            await _data(watch)


async def test_a_queue_full_at_the_outage_reports_the_lag_after_what_it_holds(pg_url: str, app: str) -> None:
    """The gap of an outage finds the queue full: the watcher lags instead (no gap), after every queued event.
    Before: the oldest queued event was dropped."""
    async with _store(pg_url, app, watch_queue_size=2, report_watch_gaps=True) as store, \
            store.watch(stream_name="outfull") as watch:
        for n in range(2):
            await store.set(_set(n, "outfull", str(n)))
        sub: Any = watch._sub
        await until(lambda: sub._queue.full())
        listener: Any = store._listener
        first = listener.driver
        assert await _terminate_listen(app) == 1
        await until(lambda: listener.driver not in (None, first))
        assert [await _data(watch) for _ in range(2)] == [0, 1]
        with pytest.raises(StreamLagError) as caught:
            await _data(watch)
        assert not isinstance(caught.value, StreamGapError)


def _count_selects(store: SQLStream) -> list[str]:
    statements: list[str] = []

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    return statements


async def _open_all(store: SQLStream, n: int, stream: str | None) -> list[Watch]:
    watches = [store.watch(stream_name=stream) for _ in range(n)]
    for watch in watches:
        await watch.open()
    return watches


async def test_an_event_sent_without_its_data_is_read_back_once_for_all_watchers(pg_url: str, app: str) -> None:
    """An older version's big create, sent without its data: before, each of 20 watchers read the row back itself
    (20 queries per event). Now one; every watcher still gets its own copy of the value."""
    big = {"blob": "x" * 9000}
    async with _store(pg_url, app) as store, older_writer(pg_url, app) as older:
        watches = await _open_all(store, 20, "big")
        try:
            selects = _count_selects(store)
            await older.set(_set(big, "big"))
            await _notify(pg_url, older_notification("big", "g", "i"))
            events = [await anext(watch) for watch in watches]
            assert [e["event"] for e in events] == [{"type": "create", "data": big}] * 20
            assert len({id(e["event"]["data"]) for e in events}) == 20  # no two watchers share one value
            assert len(selects) == 1, selects
        finally:
            for watch in watches:
                await watch.aclose()


async def test_an_event_sent_as_a_row_reference_is_read_back_once(pg_url: str, app: str) -> None:
    """Names too long for a notification, from an older version: the watchers get the row's key and read names and
    value back, once."""
    stream = "s" * 9000
    async with _store(pg_url, app) as store, older_writer(pg_url, app) as older:
        watches = await _open_all(store, 10, None)
        try:
            selects = _count_selects(store)
            await older.set(_set([1], stream))
            await _notify(pg_url, older_notification(stream, "g", "i", ref=True))
            events = [await anext(watch) for watch in watches]
            assert {(e["streamName"], e["groupId"], e["id"]) for e in events} == {(stream, "g", "i")}
            assert [e["event"] for e in events] == [{"type": "create", "data": [1]}] * 10
            assert len(selects) == 1, selects
        finally:
            for watch in watches:
                await watch.aclose()


async def test_a_reader_cancelled_during_the_shared_read_back_fails_no_other(pg_url: str, app: str) -> None:
    """The first reader starts the one read (of an older version's big create) and is cancelled while it waits
    (the table locked): the second reader still gets the event, from that same read."""
    big = "y" * 9000
    async with _store(pg_url, app) as store, older_writer(pg_url, app) as older:
        first, second = await _open_all(store, 2, "cancelled")
        try:
            await older.set(_set(big, "cancelled"))
            await _notify(pg_url, older_notification("cancelled", "g", "i"))
            selects = _count_selects(store)
            locker = await asyncpg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(False))
            try:
                tx = locker.transaction()
                await tx.start()
                await locker.execute(f"LOCK TABLE {TABLE_NAME} IN ACCESS EXCLUSIVE MODE")
                reading = asyncio.ensure_future(anext(first))
                await until(lambda: len(selects) == 1)  # the shared read is in flight, waiting for the lock
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                later = asyncio.ensure_future(anext(second))
                await tx.rollback()
            finally:
                await locker.close()
            async with asyncio.timeout(5):
                assert (await later)["event"]["data"] == big
            assert len(selects) == 1
        finally:
            await first.aclose()
            await second.aclose()


class _BlackHole:
    """A TCP server that accepts and never answers; ``gone`` is set once its client closed the socket."""

    def __init__(self) -> None:
        self.accepted = 0
        self.gone = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while await reader.read(4096):
                pass
        except OSError:
            pass
        self.gone.set()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def black_hole() -> AsyncIterator[_BlackHole]:
    hole = _BlackHole()
    await hole.start()
    yield hole
    await hole.close()


async def test_a_hung_connect_is_cut_at_the_store_s_timeout(pg_url: str, black_hole: _BlackHole) -> None:
    """A server that accepts and never answers: the watch fails at the store's timeout (0.5 s) and its connection
    attempt ends with it. Before: the attempt held its socket until asyncpg's own connect timeout (60 s)."""
    assert black_hole.server is not None
    port = black_hole.server.sockets[0].getsockname()[1]
    url = make_url(pg_url).set(port=port).render_as_string(False)
    async with SQLStream.from_url(url, timeout=0.5) as store:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StreamTimeoutError, match=r"SQLStream\.watch did not finish within 0\.5 s"):
            await store.watch().open()
        assert loop.time() - started < 2
        assert black_hole.accepted == 1
        async with asyncio.timeout(2):
            await black_hole.gone.wait()


async def test_a_connect_hook_cut_short_by_the_timeout_leaves_no_connection(pg_url: str) -> None:
    """The store's timeout (0.5 s) ends the LISTEN connection's attempt while a connect hook of the engine still
    runs (a 5 s statement): the connection, already made, is closed at once (SQLAlchemy 2.0 strands it there).
    Before: the attempt ran on until the hook ended, 5 s."""
    engine = create_async_engine(pg_url)
    made: list[Any] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _slow(dbapi_connection: Any, _record: Any) -> None:
        made.append(dbapi_connection.driver_connection)
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_sleep(5)")
        cursor.close()

    async with SQLStream(engine, owns_engine=True, timeout=0.5) as store:
        with pytest.raises(StreamTimeoutError):
            await store.watch().open()
        assert len(made) == 1
        await until(made[0].is_closed, within=1)  # the server ends the backend when its statement ends


async def test_closing_the_last_watcher_during_a_hung_reconnect_is_prompt(pg_url: str) -> None:
    """The LISTEN connection is lost and the server then hangs every new connection: closing the last watcher
    (and the store) returns at once and leaves no task. Before: the close waited 2 s for the hung attempt."""
    relay = Relay(make_url(require_postgres()).port or 5432)
    await relay.start()
    try:
        url = make_url(pg_url).set(port=relay.server.sockets[0].getsockname()[1] if relay.server else 0)
        store = SQLStream.from_url(url.render_as_string(False), timeout=10)
        watch = store.watch()
        await watch.open()
        relay.flowing.clear()  # new connections: accepted, never answered
        relay.cut()
        await until(lambda: len(relay.transports) > 0)  # the reconnect's attempt is in flight, hung
        listener: Any = store._listener
        assert listener._reconnecting is not None and not listener._reconnecting.done()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await watch.aclose()
        closed_in = loop.time() - started
        await store.aclose()
        assert closed_in < 0.5, closed_in
        left = [t for t in asyncio.all_tasks() if "_Listener" in t.get_coro().__qualname__]  # type: ignore[union-attr]
        assert left == []
    finally:
        await relay.close()


async def test_the_store_closes_promptly_while_a_reconnect_backs_off(pg_url: str, app: str) -> None:
    """Held: the database refusing connections, the reconnect pausing between attempts; aclose ends the readers
    and returns at once, and nothing listens afterwards."""
    database = make_url(pg_url).database
    store = _store(pg_url, app)
    watch = store.watch(stream_name="backoff")
    await watch.open()
    reader = asyncio.ensure_future(anext(watch))
    await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        assert await _terminate_listen(app) == 1
        listener: Any = store._listener
        await until(lambda: listener._reconnecting is not None and listener.driver is None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await store.aclose()
        assert loop.time() - started < 0.5
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(2):
                await reader
    finally:
        await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await watch.aclose()
    await until_backends(app, listening=0)


async def test_watches_opened_cancelled_and_closed_at_once_leave_nothing_behind(pg_url: str, app: str) -> None:
    """Held: 4 tasks, 600 rounds each, of open (cancelled at a random turn 3 times in 10) and close, while every
    connection of the store is killed again and again. No connection, task or listener is left behind, and a new
    watch hears the next write."""
    async with _store(pg_url, app) as store:
        opened = failed = 0

        async def churn(seed: int) -> None:
            nonlocal opened, failed
            rnd = random.Random(seed)
            for _ in range(600):
                watch = store.watch(stream_name="churn")
                opening = asyncio.ensure_future(watch.open())
                for _ in range(rnd.randrange(6)):
                    await asyncio.sleep(0)
                if rnd.random() < 0.3:
                    opening.cancel()
                try:
                    await opening
                    opened += 1
                except asyncio.CancelledError:
                    pass
                except StreamError:
                    failed += 1  # the kill hit this watch's own connect: its one attempt fails, clearly
                for _ in range(rnd.randrange(4)):
                    await asyncio.sleep(0)
                await watch.aclose()

        async def kill() -> None:
            while True:
                killed.append(await _terminate_all(app))  # listening, or still being made

        killed: list[int] = []
        killer = asyncio.ensure_future(kill())
        try:
            async with asyncio.timeout(20):
                await asyncio.gather(*(churn(seed) for seed in range(4)))
        finally:
            killer.cancel()
            await asyncio.gather(killer, return_exceptions=True)
        assert opened > 1000 and sum(killed) >= 3, (opened, killed)
        assert store._listener is None  # the last watcher's close stopped it
        await until_backends(app, listening=0)
        assert await _backends(app) <= 1  # at most the pool's own connection
        async with store.watch(stream_name="churn") as watch:
            await store.set(_set(1, "churn"))
            assert await _data(watch) == 1
    left = [t for t in asyncio.all_tasks() if "_Listener" in t.get_coro().__qualname__]  # type: ignore[union-attr]
    assert left == []
