"""Attacks on the lifecycle of the stream socket's store event feed: its shared opening failing with no join left
to hear of it, a store whose unsubscribe never answers (at the engine's stop, and when the last client leaves),
the engine's stop during the feed's retry pause, joins and leaves racing a feed that fails and re-opens, and many
join/leave cycles leaving tasks and memory where they were."""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from iii.stream import StreamSetInput
from iii_engine import Engine
from iii_engine.modules.stream import socket as socket_module
from iii_streams import MemoryStream
from iii_streams.events import StreamEvent, Subscription, Watch, make_event
from tests.polling import until

from .helpers import SocketClient, engine_config, stream_module

pytestmark = [pytest.mark.our_engine("replaces the stream socket's store"), pytest.mark.timeout(30)]

_BREAK = "feed-lifecycle-break"  # an event under this stream name makes every feed reading it fail


class _Sub:
    """A memory subscription whose close can hang (until :attr:`_Store.unhang`) or fail, and whose reads fail at
    a ``_BREAK`` event."""

    def __init__(self, store: _Store, inner: Subscription) -> None:
        self.store = store
        self.inner = inner

    async def get(self) -> StreamEvent:
        event = await self.inner.get()
        if event.get("streamName") == _BREAK:
            raise ConnectionError("the store dropped the subscription")
        return event

    async def close(self) -> None:
        await self.inner.close()
        self.store.closes += 1
        if self.store.close_hangs:
            await self.store.unhang.wait()
        if self.store.close_fails:
            raise ConnectionError("the store's connection went while unsubscribing")


class _Store(MemoryStream):
    """A memory store whose subscribes can wait for :attr:`release` or fail, and whose unsubscribes can hang or
    fail (see :class:`_Sub`)."""

    def __init__(self) -> None:
        super().__init__(publish_events=True)
        self.release = asyncio.Event()
        self.release.set()
        self.unhang = asyncio.Event()
        self.open_fails = False
        self.close_hangs = False
        self.close_fails = False
        self.opens = 0
        self.closes = 0

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        async def opener() -> Subscription:
            self.opens += 1
            await self.release.wait()
            if self.open_fails:
                raise ConnectionError("the store refused the subscription")
            return _Sub(self, self._hub.subscribe())

        return Watch(opener, self._filter(stream_name, group_id, item_id))

    def break_feed(self) -> None:
        self._hub.publish(make_event(_BREAK, "g", "i", "create", 0))


def _socket(engine: Engine, store: MemoryStream) -> socket_module.StreamSocketServer:
    socket = stream_module(engine).socket
    assert socket is not None
    socket.store = store
    return socket


async def test_an_opening_that_fails_after_every_join_gave_up_is_not_left_unretrieved(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:
        async with Engine(config=engine_config(join_timeout_ms=100)) as engine:
            store = _Store()
            store.release.clear()
            store.close_fails = True
            socket = _socket(engine, store)
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            await until(lambda: store.opens == 1)
            opening = socket._opening
            assert opening is not None
            assert (await client.recv())["event"]["code"] == "join_timeout"
            await client.close()
            await until(lambda: not socket._clients)
            # the subscribe answers with nobody left: the opening closes it, and that close fails
            store.release.set()
            await asyncio.wait([opening])
            del opening
            gc.collect()
            # before: "Task exception was never retrieved" (the shield of every join that gave up let go of it)
            assert not unhandled, unhandled
            assert "went while unsubscribing" in caplog.text
            assert not socket.following
            # the socket goes on: a later join opens the feed and gets its sync and the changes
            store.close_fails = False
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            assert (await client.recv())["event"] == {"type": "create", "data": 1}
            await client.close()
        gc.collect()
        assert not unhandled, unhandled
    finally:
        loop.set_exception_handler(previous)


async def test_the_engines_stop_does_not_wait_for_an_unsubscribe_that_never_answers(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(socket_module, "_WATCH_CLOSE_TIMEOUT_S", 0.2)
    engine = Engine(config=engine_config())
    await engine.start()
    store = _Store()
    store.close_hangs = True
    socket = _socket(engine, store)
    client = await SocketClient.connect(engine)
    try:
        await client.join("sub", "s", "g")
        assert (await client.recv())["event"]["type"] == "sync"
        # before: the stop waited for the store's unsubscribe (a Redis or PostgreSQL connection that never
        # answers: forever)
        await asyncio.wait_for(engine.stop(), 10)
    finally:
        store.unhang.set()
    assert store.closes == 1
    assert not socket.following and socket._watch is None
    assert "close of its event subscription did not end within" in caplog.text


async def test_a_hung_unsubscribe_after_the_last_client_does_not_wedge_later_joins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_WATCH_CLOSE_TIMEOUT_S", 0.2)
    async with Engine(config=engine_config(join_timeout_ms=3000)) as engine:
        store = _Store()
        store.close_hangs = True
        socket = _socket(engine, store)
        try:
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
            await client.close()
            await until(lambda: store.closes == 1)
            # before: the feed's lock stayed with the hung close, so every later join's feed never opened
            # (join_timeout, then no live events) and the engine's stop waited for good
            client = await SocketClient.connect(engine)
            await client.join("sub", "s", "g")
            answer = (await client.recv())["event"]
            assert answer["type"] == "sync", answer
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            assert (await client.recv())["event"] == {"type": "create", "data": 1}
            await client.close()
            await until(lambda: not socket.following)
        finally:
            store.unhang.set()


async def test_the_engines_stop_during_the_feeds_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_FEED_RETRY_S", 60.0)  # the pump sits in its pause when the stop comes
    monkeypatch.setattr(socket_module, "_FEED_RETRY_MAX_S", 60.0)
    engine = Engine(config=engine_config(join_timeout_ms=500))
    await engine.start()
    store = _Store()
    store.open_fails = True
    socket = _socket(engine, store)
    idle = await SocketClient.connect(engine)  # keeps the feed (and its pump's retries) going without a join
    client = await SocketClient.connect(engine)
    await client.join("sub", "s", "g")
    with pytest.raises(ConnectionClosed) as closed:  # the pump's failed attempt closes it, then pauses
        while True:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    pump = socket._pump
    assert pump is not None and not pump.done()
    await asyncio.wait_for(engine.stop(), 5)
    assert pump.done() and not socket.following and socket._watch is None
    with pytest.raises(ConnectionClosed):
        await idle.recv()


async def test_joins_and_leaves_racing_a_feed_that_fails_and_reopens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_FEED_RETRY_S", 0.005)
    monkeypatch.setattr(socket_module, "_FEED_RETRY_MAX_S", 0.02)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:
        async with Engine(config=engine_config(join_timeout_ms=2000)) as engine:
            store = _Store()
            socket = _socket(engine, store)
            outcomes = {"synced": 0, "closed": 0}

            async def subscriber(n: int) -> None:
                for cycle in range(25):
                    client = await SocketClient.connect(engine)
                    try:
                        await client.join(f"sub{cycle}", "s", f"g{n % 3}")
                        frame = await client.recv()
                        assert frame["event"]["type"] in ("sync", "error"), frame
                        outcomes["synced"] += frame["event"]["type"] == "sync"
                        if cycle % 2:
                            await client.leave(f"sub{cycle}", "s", f"g{n % 3}")
                    except ConnectionClosed as exc:  # the feed failed under it: 1013, re-join
                        assert exc.rcvd is not None and exc.rcvd.code == 1013, exc
                        outcomes["closed"] += 1
                    finally:
                        await client.close()

            async def breaker() -> None:
                for n in range(60):
                    store.open_fails = n % 4 == 3
                    store.break_feed()
                    await asyncio.sleep(0.01)  # a failing store's rhythm, not a synchronisation
                store.open_fails = False

            await asyncio.gather(breaker(), *(subscriber(n) for n in range(6)))
            await until(lambda: not socket._clients)
            await until(lambda: not socket.following and socket._opening is None)
            assert not store._hub.active  # every store subscription the feed opened was closed
            assert outcomes["synced"] > 0
        gc.collect()
        assert not unhandled, unhandled
    finally:
        loop.set_exception_handler(previous)


async def test_a_thousand_join_leave_cycles_leave_tasks_and_memory_at_their_baseline(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        store = socket.store

        async def cycles(n: int) -> None:
            """One connection's 10 join/leave cycles; its close, as the last client, closes the feed."""
            client = await SocketClient.connect(engine)
            for m in range(10):
                await client.join(f"sub{m}", "s", f"g{n % 10}", None if m % 2 else f"i{m}")
                assert (await client.recv())["event"]["type"] == "sync"
                await client.leave(f"sub{m}", "s", f"g{n % 10}", None if m % 2 else f"i{m}")
            await client.close()
            await until(lambda: not socket._clients)

        for n in range(5):  # warm-up: caches, first-use allocations
            await cycles(n)
        gc.collect()
        tasks = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(100):
                await cycles(n)
            await until(lambda: not socket.following)
            await until(lambda: len(asyncio.all_tasks()) <= tasks)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 256 * 1024, f"{grown} bytes more after 1000 cycles"
        assert socket._opening is None and socket._watch is None and not socket._watchers
        assert isinstance(store, MemoryStream) and not store._hub.active
