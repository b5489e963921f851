"""The engine's stream socket and a store whose event feed misbehaves: a feed that opens and then fails at once is
retried less and less often (each retry closed every subscribed client with 1013, at a fixed 0.5 s: a reconnect
storm), and a feed that does not open holds a join no longer than ``join_timeout_ms`` (it held every join for the
store's own timeout)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.stream import StreamSetInput
from iii_engine import Engine
from iii_engine.modules.stream import socket as socket_module
from iii_streams import MemoryStream
from iii_streams.events import StreamEvent, Subscription, Watch
from tests.polling import until

from .helpers import SocketClient, engine_config, stream_module

pytestmark = [pytest.mark.our_engine("replaces the stream socket's store"), pytest.mark.timeout(30)]


class _FailingRead:
    """A subscription that delivers what it is given, stays up ``hold`` seconds, then fails its next read."""

    def __init__(self, events: list[StreamEvent], hold: float) -> None:
        self.events = events
        self.hold = hold

    async def get(self) -> StreamEvent:
        if self.events:
            return self.events.pop(0)
        await asyncio.sleep(self.hold)  # the feed's uptime, the subject of the test: not a synchronisation
        raise RuntimeError("the store's connection broke")

    async def close(self) -> None:
        pass


class _FlakyFeedStore(MemoryStream):
    """Each watch opens at once and fails on its first read, unless :attr:`plan` says otherwise for that open (events
    to deliver first, seconds to stay up); :attr:`opened` holds the loop time of each open."""

    def __init__(self) -> None:
        super().__init__(publish_events=True)
        self.opened: list[float] = []
        self.plan: dict[int, tuple[list[StreamEvent], float]] = {}

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        async def opener() -> Subscription:
            events, hold = self.plan.get(len(self.opened), ([], 0.0))
            self.opened.append(asyncio.get_running_loop().time())
            return _FailingRead(list(events), hold)

        return Watch(opener, self._filter(stream_name, group_id, item_id))


async def test_a_feed_failing_right_after_each_open_is_retried_less_and_less_often(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "_FEED_RETRY_S", 0.05)
    monkeypatch.setattr(socket_module, "_FEED_RETRY_MAX_S", 1.0)
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        store = _FlakyFeedStore()
        event: StreamEvent = {"type": "stream", "streamName": "s", "groupId": "g", "id": "i", "timestamp": 1,
                              "event": {"type": "create", "data": 1}}
        store.plan = {5: ([event], 0.0),  # delivers, then fails at once: not up
                      6: ([], 1.05)}  # stays up _FEED_RETRY_MAX_S: up
        socket.store = store
        idle = await SocketClient.connect(engine)  # keeps the feed open after the joined client is closed
        joined = await SocketClient.connect(engine)
        await joined.join("sub", "s", "g")
        await until(lambda: len(store.opened) >= 8, within=20)
        gaps = [later - earlier for earlier, later in zip(store.opened, store.opened[1:], strict=False)]
        # 0.05, 0.1, 0.2, 0.4 s: before, 0.5 s each time, for as long as the store kept failing
        assert gaps[0] < 0.3, gaps
        assert gaps[3] >= 0.4, gaps
        # a feed that passed an event and failed at once is not taken as up: 1 s (the cap), not the first pause
        assert gaps[5] >= 1.0, gaps
        # one that stayed up is: the first pause again after its 1.05 s
        assert gaps[6] < 1.05 + 0.4, gaps
        await idle.close()


class _StuckFeedStore(MemoryStream):
    """Its watches open only once :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__(publish_events=True)
        self.release = asyncio.Event()

    def watch(self, stream_name: str | None = None, group_id: str | None = None,
              item_id: str | None = None) -> Watch:
        async def opener() -> Subscription:
            await self.release.wait()
            return self._hub.subscribe()

        return Watch(opener, self._filter(stream_name, group_id, item_id))


async def test_a_feed_that_does_not_open_holds_a_join_no_longer_than_join_timeout_ms() -> None:
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        store = _StuckFeedStore()
        socket.store = store
        client = await SocketClient.connect(engine)
        await client.join("sub", "s", "g")
        answer: dict[str, Any] = (await client.recv(wait=5))["event"]
        assert (answer["type"], answer["code"]) == ("error", "join_timeout"), answer
        assert "event feed did not open" in answer["message"]
        # once the store answers, the joined client follows its changes
        store.release.set()
        await until(lambda: socket._watch is not None and socket._watch._sub is not None)
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert (await client.recv())["event"] == {"type": "create", "data": 1}
        await client.close()
