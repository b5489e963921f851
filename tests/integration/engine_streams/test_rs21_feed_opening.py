"""Attacks on the join's bounded wait for the store's event feed (f594a32) with a store whose subscribe does not
answer: every join waiting for the feed shares one opening (each connect-join-disconnect left a task of its own,
and its connection's handler, waiting on the feed's lock for as long as the store hung), the engine's stop does not
wait for the store (it waited for as long as the subscribe did: forever for a store without a timeout of its own),
and a client whose join gave up on the feed is closed with 1013 when the opening then fails (not left silent)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from iii.stream import StreamSetInput
from iii_engine import Engine
from iii_engine.modules.stream import socket as socket_module
from iii_streams import MemoryStream
from iii_streams.events import Subscription, Watch
from tests.polling import until

from .helpers import SocketClient, engine_config, stream_module

pytestmark = [pytest.mark.our_engine("replaces the stream socket's store"), pytest.mark.timeout(30)]


class _HungStore(MemoryStream):
    """Its watches' subscribes wait for :attr:`release`, then fail if :attr:`fail` (else subscribe)."""

    def __init__(self) -> None:
        super().__init__(publish_events=True)
        self.release = asyncio.Event()
        self.fail = False
        self.opens = 0
        self.cancelled = 0

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        async def opener() -> Subscription:
            self.opens += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            if self.fail:
                raise ConnectionError("the store refused the subscription")
            return self._hub.subscribe()

        return Watch(opener, self._filter(stream_name, group_id, item_id))


def _socket(engine: Engine, store: MemoryStream) -> socket_module.StreamSocketServer:
    socket = stream_module(engine).socket
    assert socket is not None
    socket.store = store
    return socket


async def test_joins_while_the_store_hangs_share_one_opening_and_leave_no_task_behind() -> None:
    async with Engine(config=engine_config(join_timeout_ms=100)) as engine:
        store = _HungStore()
        socket = _socket(engine, store)
        client = await SocketClient.connect(engine)
        await client.join("sub", "s", "g")
        await until(lambda: store.opens == 1)
        await client.close()
        await until(lambda: not socket._clients)
        tasks = len(asyncio.all_tasks())
        try:
            for n in range(40):  # a client that keeps reconnecting while the store does not answer
                client = await SocketClient.connect(engine)
                await client.join(f"sub{n}", "s", "g")
                if n % 2:
                    answer = (await client.recv())["event"]
                    assert answer["code"] == "join_timeout", answer
                await client.close()
                await until(lambda: not socket._clients)
            # before: 2 tasks more per cycle (the join's shielded opening, the handler's wait for the feed's lock)
            await until(lambda: len(asyncio.all_tasks()) <= tasks + 2, within=2)
            assert store.opens == 1
        finally:
            store.release.set()
        await until(lambda: socket._opening is None)
        assert not socket.following  # nobody is left: the opening closed what it opened
        assert not store._hub.active  # and no store subscription is left open


async def test_the_engines_stop_does_not_wait_for_a_store_that_does_not_subscribe() -> None:
    engine = Engine(config=engine_config(join_timeout_ms=20_000))
    await engine.start()
    store = _HungStore()
    socket = _socket(engine, store)
    client = await SocketClient.connect(engine)
    await client.join("sub", "s", "g")
    await until(lambda: store.opens == 1)
    try:
        # before: the stop waited for the subscribe (here forever; a real store's own timeout, 60 s)
        await asyncio.wait_for(engine.stop(), 10)
    finally:
        store.release.set()
    assert store.cancelled == 1
    assert not socket.following and socket._opening is None


async def test_a_join_that_gave_up_on_the_feed_is_closed_with_1013_when_the_opening_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_FEED_RETRY_S", 0.05)
    async with Engine(config=engine_config(join_timeout_ms=200)) as engine:
        store = _HungStore()
        _socket(engine, store)
        client = await SocketClient.connect(engine)
        await client.join("sub", "s", "g")
        answer: dict[str, Any] = (await client.recv())["event"]
        assert answer["code"] == "join_timeout", answer
        store.fail = True
        store.release.set()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # joined again once the store subscribes: the sync, then every change
        store.fail = False
        client = await SocketClient.connect(engine)
        await client.join("sub", "s", "g")
        assert (await client.recv())["event"]["type"] == "sync"
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert (await client.recv())["event"] == {"type": "create", "data": 1}
        await client.close()
