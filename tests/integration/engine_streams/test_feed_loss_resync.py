"""When the engine's stream socket may have missed store events, its clients are told: each client with a
subscription is closed with 1013 so it reconnects, joins again and gets a fresh sync. Before, a lost Redis pub/sub
connection (events published meanwhile are gone) or a feed that fell behind was only logged by the engine; clients
kept their socket and silently never saw those changes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from iii.stream import StreamSetInput
from iii_engine import Engine
from iii_engine.modules.stream.socket import _MISSED
from iii_streams import MemoryStream
from iii_streams.events import Watch
from tests.integration.streams.conftest import delete_redis_keys
from tests.polling import until
from tests.services import require_redis

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = [pytest.mark.our_engine("reads the stream socket's clients"), pytest.mark.timeout(30)]


async def _closed_with(client: SocketClient) -> tuple[int, str]:
    """Read until the socket closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv()
    received = closed.value.rcvd
    assert received is not None, "closed without a close frame"
    return received.code, received.reason


@pytest.mark.redis
async def test_a_lost_redis_feed_closes_joined_clients_so_they_re_sync() -> None:
    name = f"feedgap{uuid.uuid4().hex[:10]}"
    url = require_redis()
    admin = aioredis.Redis.from_url(url)
    # a prefix of its own, so a channel of its own ({name}::stream::events): on the server-wide
    # stream::events another test process's writes would flow through this engine's feed
    config = engine_config(store_url=f"{url}?client_name={name}&key_prefix={name}", slow_close_timeout_ms=2000)
    try:
        async with Engine(config=config) as engine:
            socket = stream_module(engine).socket
            assert socket is not None
            worker = await Worker.connect(engine.url)
            joined, idle = await SocketClient.connect(engine), await SocketClient.connect(engine)
            await joined.join("sub", name, "g")
            assert (await joined.recv())["event"]["type"] == "sync"

            async def subscribers() -> list[str]:
                return [str(c["id"]) for c in await admin.client_list()
                        if c.get("name") == name and str(c.get("sub", "0")) != "0"]

            await until(lambda: socket.following)
            killed = await subscribers()
            assert len(killed) == 1  # the engine's one feed connection (its start-up probe's is gone)
            await admin.client_kill_filter(_id=killed[0])  # events published now are lost for good
            assert await asyncio.wait_for(_closed_with(joined), 10) == (1013, _MISSED)
            # a client with nothing to re-sync keeps its socket
            await idle.join("late", name, "g")
            assert (await idle.recv())["event"]["type"] == "sync"
            # the one who came back re-joins and follows changes again
            again = await SocketClient.connect(engine)
            await again.join("sub", name, "g")
            assert (await again.recv())["event"]["type"] == "sync"
            await worker.result("stream::set", {"stream_name": name, "group_id": "g", "item_id": "i", "data": 1})
            assert (await again.recv())["event"] == {"type": "create", "data": 1}
            for client in (again, idle):
                await client.close()
            await worker.close()
    finally:
        await admin.aclose()
        await delete_redis_keys(f"{name}:*")


async def test_a_feed_that_fell_behind_closes_joined_clients_and_resubscribes() -> None:
    """The in-memory store's feed queue holds 3 events here; 10 changes made without yielding overflow it."""
    async with Engine(config=engine_config()) as engine:
        module = stream_module(engine)
        socket = module.socket
        assert socket is not None
        small = MemoryStream(publish_events=True, watch_queue_size=3)
        socket.store = small
        client = await SocketClient.connect(engine)
        await client.join("sub", "s", "g")
        assert (await client.recv())["event"]["type"] == "sync"
        await until(lambda: socket._watch is not None and socket._watch._sub is not None)
        first: Watch | None = socket._watch
        for n in range(10):
            await small.set(StreamSetInput(stream_name="s", group_id="g", item_id=str(n), data=n))
        seen = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                seen.append((await client.recv())["id"])
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, _MISSED)
        assert seen == ["0", "1", "2"]  # every event queued before the lag, then the close
        await until(lambda: socket._watch is not first)  # the feed subscribed again


async def test_a_feed_that_ends_without_an_error_closes_joined_clients_and_resubscribes() -> None:
    """A feed whose subscription just ends (its store's reader stopped) made the pump return while the feed stayed
    marked open: every client then got no events, with no error, until the last one left."""
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        client = await SocketClient.connect(engine)
        await client.join("sub", "s", "g")
        assert (await client.recv())["event"]["type"] == "sync"
        await until(lambda: socket._watch is not None and socket._watch._sub is not None)
        first = socket._watch
        assert first is not None and first._sub is not None
        await first._sub.close()  # the subscription ends under the pump's read
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv()
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, _MISSED)
        again = await SocketClient.connect(engine)
        await again.join("sub", "s", "g")
        assert (await again.recv())["event"]["type"] == "sync"
        worker = await Worker.connect(engine.url)
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        assert (await again.recv())["event"] == {"type": "create", "data": 1}
        await again.close()
        await worker.close()
