"""Attacks on the stream socket's "missed events → close 1013" rule at scale: one cut of the store's event
connection closes 600 joined clients at once (each gets 1013 with the re-sync reason, the engine keeps answering
meanwhile, no closer task is left behind, and all 600 reconnecting at once are served and follow changes again);
the in-memory store's feed lagging under thousands of events with many clients (each joined one closed once,
the others left alone)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from iii.stream import StreamSetInput
from iii_engine import Engine
from iii_engine.modules.stream.socket import _MISSED, StreamSocketServer
from iii_streams import MemoryStream
from tests.integration.streams.conftest import delete_redis_keys
from tests.polling import until
from tests.services import require_redis

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = [pytest.mark.our_engine("closes our engine's stream clients"), pytest.mark.timeout(60)]

MANY = 600


async def _closed_with(client: SocketClient, within: float = 20) -> tuple[int, str]:
    """Read (and drop) frames until the socket closes; its close code and reason."""
    async def read() -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv(within)
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code, closed.value.rcvd.reason
    return await asyncio.wait_for(read(), within)


async def _joined(engine: Engine, stream: str, count: int) -> list[SocketClient]:
    """``count`` clients joined to ``stream``/g, each past its sync."""
    async def one() -> SocketClient:
        client = await SocketClient.connect(engine)
        await client.join("j", stream, "g")
        assert (await client.recv(20))["event"]["type"] == "sync"
        return client
    return list(await asyncio.gather(*(one() for _ in range(count))))


def _socket(engine: Engine) -> StreamSocketServer:
    socket = stream_module(engine).socket
    assert socket is not None
    return socket


@pytest.mark.redis
async def test_one_cut_closes_600_clients_and_all_are_served_again() -> None:
    name = f"afl{uuid.uuid4().hex[:10]}"
    url = require_redis()
    admin = aioredis.Redis.from_url(url)
    stream = f"afl{uuid.uuid4().hex[:10]}"
    try:
        # a prefix of its own, so a channel of its own ({name}::stream::events): on the server-wide
        # stream::events another test process's writes would flow through this engine's feed
        async with Engine(config=engine_config(store_url=f"{url}?client_name={name}&key_prefix={name}")) as engine:
            socket = _socket(engine)
            worker = await Worker.connect(engine.url)
            tasks_before = len(asyncio.all_tasks())
            clients = await _joined(engine, stream, MANY)
            served = set(socket._clients)
            assert len(served) == MANY
            feed = [c["id"] for c in await admin.client_list()
                    if c.get("name") == name and str(c.get("sub", "0")) != "0"]
            assert len(feed) == 1
            began = time.monotonic()
            await admin.client_kill_filter(_id=feed[0])
            closing = asyncio.gather(*(_closed_with(client) for client in clients))
            # the engine answers while it closes them all
            slowest = 0.0
            while not closing.done():
                asked = time.monotonic()
                await worker.result("stream::get", {"stream_name": stream, "group_id": "g", "item_id": "x"})
                slowest = max(slowest, time.monotonic() - asked)
                await asyncio.sleep(0.01)  # a pace for the probe calls, not a wait for a condition
            assert set(await closing) == {(1013, _MISSED)}
            took = time.monotonic() - began
            assert slowest < 2.0, f"a worker call took {slowest:.2f} s while {MANY} clients were closed"
            await until(lambda: not socket._clients, within=10)
            assert all(c.closer is not None and c.closer.done() for c in served), "a closer task was left running"
            # everyone comes back at once: served, and following changes again
            again = await _joined(engine, stream, MANY)
            await worker.result("stream::set", {"stream_name": stream, "group_id": "g", "item_id": "i", "data": 7})
            heard = await asyncio.gather(*(client.recv(20) for client in again))
            assert {(f["id"], f["event"]["type"], f["event"]["data"]) for f in heard} == {("i", "create", 7)}
            await asyncio.gather(*(client.close() for client in again))
            await until(lambda: not socket._clients and not socket.following, within=10)
            await until(lambda: len(asyncio.all_tasks()) <= tasks_before, within=10)
            await worker.close()
            print(f"{MANY} clients closed in {took:.2f} s; slowest worker call meanwhile {slowest * 1000:.0f} ms")
    finally:
        await admin.aclose()
        await delete_redis_keys(f"{name}:*")


async def test_the_memory_feed_lagging_under_thousands_of_events_closes_each_joined_client_once() -> None:
    """5,000 events made without yielding overflow the feed's 500-event queue. 100 clients joined to the busy
    group, 100 to a quiet one, 20 connected with nothing joined: the joined ones are each closed once, with the
    re-sync reason, after every event queued before the lag; the others keep their socket."""
    async with Engine(config=engine_config()) as engine:
        socket = _socket(engine)
        small = MemoryStream(publish_events=True, watch_queue_size=500)
        socket.store = small
        busy, quiet = await asyncio.gather(_joined(engine, "s", 100), _joined(engine, "quiet", 100))
        idle = [await SocketClient.connect(engine) for _ in range(20)]
        await until(lambda: socket._watch is not None and socket._watch._sub is not None)
        first = socket._watch
        for n in range(5_000):
            await small.set(StreamSetInput(stream_name="s", group_id="g", item_id=str(n), data=n))
        heard = await asyncio.gather(*(_count_until_closed(client) for client in busy + quiet))
        assert set(heard[:100]) == {(500, 1013, _MISSED)}  # every event queued before the lag, then the close
        assert set(heard[100:]) == {(0, 1013, _MISSED)}
        await until(lambda: socket._watch is not first and socket._watch is not None
                    and socket._watch._sub is not None)
        await until(lambda: len(socket._clients) == len(idle))
        # the feed follows again: a client joining now hears the next change, the idle ones join and hear it too
        late = await SocketClient.connect(engine)
        for client in [late, *idle]:
            await client.join("j", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
        await small.set(StreamSetInput(stream_name="s", group_id="g", item_id="after", data=1))
        for client in [late, *idle]:
            assert (await client.recv())["id"] == "after"
            await client.close()


async def _count_until_closed(client: SocketClient) -> tuple[int, int, str]:
    count = 0
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv(20)
            count += 1
    assert closed.value.rcvd is not None
    return count, closed.value.rcvd.code, closed.value.rcvd.reason

