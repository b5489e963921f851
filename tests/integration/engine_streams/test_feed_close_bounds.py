"""Attacks on the stream socket's bounds around the store's event subscription: the start-up probe against a store
that never answers (a custom store, a silent PostgreSQL server), and an unsubscribe that swallows its cancel after
the close's deadline let it go (kept alive, not garbage collected mid-run), and a join while the last feed's
unsubscribe hangs."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from iii.stream import StreamSetInput
from iii_engine import Engine
from iii_engine.modules.base import ModuleStartError
from iii_engine.modules.stream import module as stream_module_file
from iii_engine.modules.stream import socket as socket_module
from iii_engine.modules.stream import store as store_module
from iii_streams import MemoryStream, deadlines
from iii_streams.events import StreamEvent, Subscription, Watch
from tests.polling import until
from tests.stall_relay import Relay

from .helpers import SocketClient, engine_config, stream_module
from .test_feed_lifecycle import _socket as _hanging_socket
from .test_feed_lifecycle import _Store as _HangingStore

pytestmark = [pytest.mark.our_engine("replaces the stream socket's store"), pytest.mark.timeout(30)]


class _SilentStore(MemoryStream):
    """A memory store whose subscribes never answer (a custom store with no timeout of its own)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(publish_events=True)

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        async def opener() -> Subscription:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        return Watch(opener, self._filter(stream_name, group_id, item_id))


async def _start_fails(engine: Engine, within: float) -> tuple[ModuleStartError, float]:
    began = time.monotonic()
    # before: the start waited for the subscribe for good (a custom store) or the store's own 60 s (PostgreSQL)
    with pytest.raises(ModuleStartError) as failed:
        await asyncio.wait_for(engine.start(), within)
    return failed.value, time.monotonic() - began



def _feed_closes() -> list[asyncio.Task[Any]]:
    """The store unsubscribes the socket started and that have not ended (let go ones included)."""
    return [task for task in asyncio.all_tasks() if task.get_name() == "stream-socket-feed-close" and not task.done()]

async def test_a_store_that_never_answers_the_probe_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_START_PROBE_TIMEOUT_S", 0.3, raising=False)
    monkeypatch.setattr(stream_module_file, "open_module_store", lambda *_, **__: _SilentStore())
    engine = Engine(config=engine_config())
    failure, took = await _start_fails(engine, 10)
    assert "did not answer a subscription to its events within 0.3 s" in str(failure), failure
    assert "\n" not in str(failure)
    assert took < 5, took
    assert not engine.modules  # no half-started engine: every module stopped, none handed out


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that takes connections and reads, and never answers."""
    readers: set[asyncio.Task[Any]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        readers.add(asyncio.current_task())  # type: ignore[arg-type]
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in readers:
            task.cancel()


async def test_a_silent_postgresql_server_stops_the_start_within_the_bound(
        monkeypatch: pytest.MonkeyPatch, silent_server: int) -> None:
    # The store is opened first (one connection, bounded): a server that never answers fails the start there.
    monkeypatch.setattr(store_module, "_PREPARE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(socket_module, "_START_PROBE_TIMEOUT_S", 1.0, raising=False)
    engine = Engine(config=engine_config(store_url=f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/test"))
    failure, took = await _start_fails(engine, 20)
    assert "cannot open PostgreSQL database" in str(failure) and "no answer within 1 s" in str(failure), failure
    assert took < 15, took


class _SwallowingSub:
    """A memory subscription whose close, once :attr:`_SwallowingStore.hang` is set, waits on futures nothing else
    holds and swallows every cancel (until :attr:`_SwallowingStore.hang` is cleared)."""

    def __init__(self, store: _SwallowingStore, inner: Subscription) -> None:
        self.store = store
        self.inner = inner

    async def get(self) -> StreamEvent:
        return await self.inner.get()

    async def close(self) -> None:
        await self.inner.close()
        self.store.closes += 1
        while self.store.hang:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                self.store.swallowed += 1
        self.store.ended += 1


class _SwallowingStore(MemoryStream):
    def __init__(self) -> None:
        super().__init__(publish_events=True)
        self.hang = True
        self.closes = self.swallowed = self.ended = 0

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        async def opener() -> Subscription:
            return _SwallowingSub(self, self._hub.subscribe())

        return Watch(opener, self._filter(stream_name, group_id, item_id))


def _let_go_after(store: _SwallowingStore, socket: socket_module.StreamSocketServer,
                  rounds: int) -> Callable[[], bool]:
    return lambda: store.swallowed >= rounds and not socket.following


async def test_an_unsubscribe_that_swallows_its_cancel_is_not_destroyed_pending(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(socket_module, "_WATCH_CLOSE_TIMEOUT_S", 0.2)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    store = _SwallowingStore()
    try:
        async with Engine(config=engine_config(join_timeout_ms=3000)) as engine:
            socket = stream_module(engine).socket
            assert socket is not None
            socket.store = store
            for round_ in range(1, 4):  # each round's hung unsubscribe is let go while the next feed opens
                client = await SocketClient.connect(engine)
                await client.join("sub", "s", "g")
                assert (await client.recv())["event"]["type"] == "sync"
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=round_))
                assert (await client.recv())["event"]["data"] == round_
                await client.close()
                await until(_let_go_after(store, socket, round_))
                gc.collect()
                # before: "Task was destroyed but it is pending!" (only the loop's weak reference held it)
                assert not unhandled, unhandled
            assert "3 let go and not ended yet" in caplog.text
            assert len(_feed_closes()) == deadlines.let_go_count() == 3
    finally:
        store.hang = False
        for task in _feed_closes():
            task.cancel()
        await until(lambda: not _feed_closes())
        loop.set_exception_handler(previous)
    assert store.ended == store.closes == 3
    assert not unhandled, unhandled


async def test_a_join_after_a_hung_unsubscribe_gets_its_sync_and_each_change_once() -> None:
    # the close's bound (5 s) left as it is: longer than this join's join_timeout_ms
    async with Engine(config=engine_config(join_timeout_ms=2000)) as engine:
        store = _HangingStore()
        store.close_hangs = True
        socket = _hanging_socket(engine, store)
        try:
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
            await client.close()
            await until(lambda: store.closes == 1)  # the last client left: its feed's unsubscribe hangs
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            answer = (await client.recv())["event"]
            # before: "the store's event feed did not open within 2000 ms (join_timeout_ms)": the hung unsubscribe
            # held the feed's lock for its 5 s
            assert answer["type"] == "sync", answer
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=2))
            assert (await client.recv())["event"] == {"type": "create", "data": 1}
            assert (await client.recv())["event"] == {"type": "update", "data": 2}  # not the create again
            await client.close()
            await until(lambda: not socket.following)
        finally:
            store.unhang.set()


async def test_hung_unsubscribes_under_way_are_bounded_in_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_WATCH_CLOSE_TIMEOUT_S", 0.2)
    limit: int = getattr(socket_module, "_UNSUBSCRIBING_MAX", 8)
    async with Engine(config=engine_config(join_timeout_ms=3000)) as engine:
        store = _HangingStore()
        store.close_hangs = True
        socket = _hanging_socket(engine, store)
        under_way: list[int] = []
        try:
            for _ in range(5 * limit):  # one client's connect-join-leave loop
                client = await SocketClient.connect(engine)
                await client.join("sub", "s", "g")
                assert (await client.recv())["event"]["type"] == "sync"
                await client.close()
                await until(lambda: not socket.following)
                # (one past its deadline is cancelled and let go: on a busy loop it may not have ended yet)
                under_way.append(sum(1 for task in asyncio.all_tasks()
                                     if task.get_name() == "stream-socket-feed-close" and not task.cancelling()))
            # before: one more with every cycle (40 here, 200 within 1.5 s with the 5 s bound), each holding a
            # store subscription
            assert max(under_way) <= limit, under_way
        finally:
            store.unhang.set()


async def test_each_ended_feed_is_unsubscribed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    unsubscribed: list[Watch] = []
    real = socket_module.StreamSocketServer._unsubscribe

    def counted(self: socket_module.StreamSocketServer, watch: Watch) -> asyncio.Task[None]:
        unsubscribed.append(watch)
        return real(self, watch)

    monkeypatch.setattr(socket_module.StreamSocketServer, "_unsubscribe", counted)
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        for _ in range(3):
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
            await client.close()
            await until(lambda: not socket.following and not socket._unsubscribing)
        # before: the pump's finally and _close_feed each started a close of the same subscription, two tasks
        # counted against _UNSUBSCRIBING_MAX for one (a hung unsubscribe plus its twin read as 9 under way of 8)
        assert len(unsubscribed) == 3
        assert len({id(watch) for watch in unsubscribed}) == 3


async def test_a_cancel_of_the_close_s_caller_cancels_the_unsubscribe_and_goes_through() -> None:
    store = _HangingStore()
    store.close_hangs = True
    watch = await store.watch().open()
    caller = asyncio.get_running_loop().create_task(socket_module._close_watch(watch))
    await until(lambda: store.closes == 1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller  # within the 5 s bound: the cancel is not held until the unsubscribe gives up
    # the unsubscribe was cancelled with it (a hung close holds nothing past its caller), and let go once it ended
    await until(lambda: deadlines.let_go_count() == 0)
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "stream-socket-feed-close"]


@pytest.mark.redis
async def test_joins_after_the_last_leave_on_a_stalled_redis_get_live_events_within_their_join_timeout() -> None:
    relay = Relay(6379)  # the real Redis, through connections that can go half-open
    await relay.start()
    stream = f"feed-close-bounds-{uuid.uuid4().hex}"
    try:
        async with Engine(config=engine_config(store_url=f"redis://127.0.0.1:{relay.port}/0",
                                               join_timeout_ms=10_000)) as engine:
            module = stream_module(engine)
            socket, store = module.socket, module.store
            assert socket is not None and store is not None
            client = await SocketClient.connect(engine)
            await client.join("sub", stream, "g")
            assert (await client.recv())["event"]["type"] == "sync"
            relay.blackhole()  # every connection made so far (the feed's pub/sub, the pooled ones) goes silent
            await client.close()
            await until(lambda: not socket.following, 1.0)  # the stalled unsubscribe holds nothing
            began = time.monotonic()
            client = await SocketClient.connect(engine)
            await client.join("sub", stream, "g")
            # the feed opens on a fresh connection; the sync read may take a silent pooled one (the store's
            # socket timeout, 5 s): then the join is answered sync_failed, live events following
            answer = (await client.recv(12))["event"]
            assert answer["type"] == "sync" or answer.get("code") == "sync_failed", answer
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="i", data=1))
            assert (await client.recv(12))["event"] == {"type": "create", "data": 1}
            assert time.monotonic() - began < 10, time.monotonic() - began
            await client.close()
    finally:
        await relay.close()


async def test_openings_that_find_no_client_left_count_against_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_WATCH_CLOSE_TIMEOUT_S", 0.5)
    limit: int = getattr(socket_module, "_UNSUBSCRIBING_MAX", 8)
    async with Engine(config=engine_config(join_timeout_ms=100)) as engine:
        store = _HangingStore()
        store.close_hangs = True
        socket = _hanging_socket(engine, store)
        under_way: list[int] = []
        try:
            for cycle in range(2 * limit):  # each client goes before the store answers its feed's subscribe
                store.release.clear()
                client = await SocketClient.connect(engine)
                await client.join("sub", "s", "g")
                await until(_opened(store, cycle + 1))
                await client.close()
                await until(lambda: not socket._clients)
                store.release.set()  # the opening finds nobody left and unsubscribes: that hangs
                await until(_closed(store, cycle + 1))
                # (one past its deadline is cancelled and let go: on a busy loop it may not have ended yet)
                under_way.append(sum(1 for task in asyncio.all_tasks()
                                     if task.get_name() == "stream-socket-feed-close" and not task.cancelling()))
            # before: one more per cycle, the opening's own unsubscribes not counted
            assert max(under_way) <= limit, under_way
        finally:
            store.unhang.set()
            store.release.set()


def _opened(store: _HangingStore, count: int) -> Callable[[], bool]:
    return lambda: store.opens >= count


def _closed(store: _HangingStore, count: int) -> Callable[[], bool]:
    return lambda: store.closes >= count
