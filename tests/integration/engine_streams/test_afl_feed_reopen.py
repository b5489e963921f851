"""Attack on the stream socket's "missed events → close 1013" rule: the store's event feed was not subscribed for
a while (Redis down: the pump's 0.5 s pause between attempts; after a lag: the re-open's round trip) and then
subscribed. A client that joined meanwhile read its sync before the feed was back: the changes in between reach it
through neither, so it must be closed with 1013 to re-sync once the feed is subscribed. Before, only the failures
closed clients and the subscription that finally worked closed nobody: such a client silently missed them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine
from iii_engine.modules.stream.socket import _MISSED
from iii_streams import RedisStream, Watch
from tests.integration.streams.private_redis import PrivateRedis
from tests.polling import until

from .helpers import SocketClient, Worker, stream_module
from .test_redis_engine import redis_engine_config

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("reads the stream socket's feed"), pytest.mark.timeout(30)]

_PUMP = "stream-socket-events"


class _GatedPause:
    """``asyncio.sleep`` for the tests: the feed pump's pause (between subscribe attempts) waits for ``gate``, so a
    test acts while the pump is known to be paused; every other sleep is the real one."""

    def __init__(self) -> None:
        self.real = asyncio.sleep
        self.paused = asyncio.Event()
        self.gate = asyncio.Event()

    def __call__(self, delay: float, result: Any = None) -> Coroutine[Any, Any, Any]:
        task = asyncio.current_task()
        if task is None or task.get_name() != _PUMP:
            return self.real(delay, result)
        return self._gated(result)

    async def _gated(self, result: Any) -> Any:
        self.paused.set()
        await self.gate.wait()
        self.paused.clear()
        return await self.real(0.01, result)  # once open, still a pause: a pump that keeps failing must not spin


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as running:
        await running.start()
        yield running


async def _close_code(client: SocketClient, within: float = 10) -> tuple[int, str]:
    """Read (and drop) frames until the socket closes; its close code and reason."""
    async def read() -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv(within)
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code, closed.value.rcvd.reason
    return await asyncio.wait_for(read(), within)


async def test_a_client_joined_while_the_feed_was_down_is_closed_once_it_subscribes(
        server: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    pause = _GatedPause()
    monkeypatch.setattr(asyncio, "sleep", pause)
    async with Engine(config=redis_engine_config(server.url)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        # connected with nothing joined: it keeps the feed open, and has nothing to re-sync
        idle = await SocketClient.connect(engine)
        server.stop()
        # the first client opens the feed, which cannot subscribe: the client is closed (it has no sync)
        first = await SocketClient.connect(engine)
        await first.join("a", "s", "g")
        assert await _close_code(first) == (1013, _MISSED)
        await asyncio.wait_for(pause.paused.wait(), 10)
        await server.start()
        # joins while the pump pauses: its sync is read now, from the Redis that is back
        late = await SocketClient.connect(engine)
        await late.join("b", "s", "g")
        assert (await late.recv())["event"] == {"type": "sync", "data": []}
        item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
        await worker.result("stream::set", {**item, "data": 1})  # published to nobody: the feed is not subscribed
        pause.gate.set()
        await until(lambda: socket._watch is not None and socket._watch._sub is not None)
        await worker.result("stream::set", {**item, "data": 2})
        # the client must not go on as if it had every change: it gets the first change, or is told to re-sync
        try:
            frame = await late.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1013, _MISSED)
        else:
            assert frame["event"] == {"type": "create", "data": 1}, f"silent hole: the client got {frame}"
        await idle.close()
        await worker.close()


class _GatedReopen:
    """The socket's feed store for a test: its first watch subscribes at once, later ones (the pump's re-open after
    a lag) once ``gate`` is set, like a Redis SUBSCRIBE round trip made as long as the test needs."""

    def __init__(self, store: RedisStream) -> None:
        self.store = store
        self.made = 0
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    def watch(self) -> Watch:
        watch = self.store.watch()
        self.made += 1
        if self.made > 1:
            opener = watch._opener

            async def gated() -> Any:
                self.waiting.set()
                await self.gate.wait()
                return await opener()

            watch._opener = gated
        return watch


async def test_a_client_joined_while_the_feed_re_subscribes_after_a_lag_is_closed(server: PrivateRedis) -> None:
    async with Engine(config=redis_engine_config(server.url)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        small = RedisStream.from_url(server.url, publish_events=True, watch_queue_size=2, report_watch_gaps=True)
        raw = aioredis.Redis.from_url(server.url)
        gated = _GatedReopen(small)
        socket.store = gated  # type: ignore[assignment]
        try:
            worker = await Worker.connect(engine.url)
            idle = await SocketClient.connect(engine)  # keeps the feed open; nothing to re-sync
            first = await SocketClient.connect(engine)
            await first.join("a", "s", "g")
            assert (await first.recv())["event"]["type"] == "sync"
            async with raw.pipeline(transaction=False) as burst:  # 50 events at once: the 2-event queue lags
                for n in range(50):
                    burst.publish("stream::events", json.dumps(
                        {"type": "stream", "timestamp": 0, "streamName": "s", "groupId": "g", "id": f"x{n}",
                         "event": {"type": "create", "data": n}}))
                await burst.execute()
            assert await _close_code(first) == (1013, _MISSED)
            await asyncio.wait_for(gated.waiting.wait(), 10)  # the pump re-subscribes: not yet done
            late = await SocketClient.connect(engine)
            await late.join("b", "s", "g")
            assert (await late.recv())["event"] == {"type": "sync", "data": []}
            item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
            await worker.result("stream::set", {**item, "data": 1})  # the feed's new watch is not subscribed yet
            gated.gate.set()
            await until(lambda: socket._watch is not None and socket._watch._sub is not None)
            await worker.result("stream::set", {**item, "data": 2})
            try:
                frame = await late.recv()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1013, _MISSED)
            else:
                assert frame["event"] == {"type": "create", "data": 1}, f"silent hole: the client got {frame}"
            await idle.close()
            await worker.close()
        finally:
            await raw.aclose()
            await small.aclose()
