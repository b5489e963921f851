"""The stream socket follows the store's events only while a client is connected, and a client that joins while
the last one's feed is being closed still gets every change after its sync."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from iii_engine.modules.stream.socket import StreamSocketServer, Subscription, _Client
from iii_streams import MemoryStream
from iii_streams.events import EventFilter, StreamEvent, Watch, make_event
from iii_streams.events import Subscription as FeedSubscription

WAIT = 5.0


class FakeWs:
    remote_address = ("127.0.0.1", 1)


class GatedStore(MemoryStream):
    """A memory store whose event subscriptions take until ``release`` is set to close (a LISTEN connection
    closing over a slow network), counting how many are open."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.closing = asyncio.Event()
        self.open_subscriptions = 0

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        store = self

        class Gated:
            def __init__(self, inner: FeedSubscription) -> None:
                self.inner = inner

            async def get(self) -> StreamEvent:
                return await self.inner.get()

            async def close(self) -> None:
                store.closing.set()
                await store.release.wait()
                await self.inner.close()
                store.open_subscriptions -= 1

        async def opener() -> FeedSubscription:
            store.open_subscriptions += 1
            return Gated(self._hub.subscribe())

        return Watch(opener, EventFilter(stream_name, group_id, item_id))


def _server(store: MemoryStream) -> StreamSocketServer:
    server = StreamSocketServer(*cast(Any, (None,) * 6))
    server.store = store
    return server


def _client(server: StreamSocketServer) -> _Client:
    client = _Client(cast(Any, FakeWs()), None, 8)
    server._clients.add(client)
    server._subscribe(client, "sub", Subscription("s", "g", None))
    return client


async def test_no_feed_without_clients_and_the_last_client_closes_it() -> None:
    store = GatedStore()
    store.release.set()
    server = _server(store)
    assert not server.following and store.open_subscriptions == 0  # nothing read back while nobody listens
    first, second = _client(server), _client(server)
    await server._open_feed()
    await server._open_feed()  # a second join reuses it
    assert server.following and store.open_subscriptions == 1
    server._clients.discard(first)
    await server._close_feed()
    assert server.following  # another client is still connected
    server._clients.discard(second)
    await server._close_feed()
    assert not server.following
    # the ended feed's unsubscribe runs in the background (a slow store must not hold the next join's feed)
    if server._unsubscribing:
        await asyncio.wait(tuple(server._unsubscribing), timeout=WAIT)
    assert store.open_subscriptions == 0


async def test_a_join_during_the_close_opens_a_fresh_feed_and_misses_nothing() -> None:
    store = GatedStore()
    server = _server(store)
    leaving = _client(server)
    await server._open_feed()
    server._clients.discard(leaving)
    closing = asyncio.create_task(server._close_feed())
    await asyncio.wait_for(store.closing.wait(), WAIT)  # the old feed is half closed
    joining = _client(server)
    opening = asyncio.create_task(server._open_feed())  # the join's step before its sync read
    await asyncio.sleep(0)
    assert not opening.done()  # it waits for the close instead of trusting the feed that is going away
    store.release.set()
    await asyncio.wait_for(asyncio.gather(closing, opening), WAIT)
    assert server.following and store.open_subscriptions == 1
    # every change after the join's feed is open reaches the client, in order
    for n in range(3):
        await store.publish(make_event("s", "g", "i", "update", {"n": n}))
    frames = [await asyncio.wait_for(joining.queue.get(), WAIT) for _ in range(3)]
    assert [b'"n":%d' % n in frame for n, frame in enumerate(frames)] == [True] * 3
    server._clients.discard(joining)
    await server.close()
    assert not server.following and store.open_subscriptions == 0
