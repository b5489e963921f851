"""Attacks on the stream socket fan-out (group index, one shared frame per event): many watchers with one that
never reads, subscribers joining and leaving during a burst, events on groups nobody watches. Every fast watcher
gets every event of its group in order, the slow one is cut off (1013) without holding the others up, and the
index is empty once everyone left."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = pytest.mark.our_engine("reads the stream socket's group index")

EVENTS = 100


def item(item_id: str, group: str = "g", **extra: Any) -> dict[str, Any]:
    return {"stream_name": "s", "group_id": group, "item_id": item_id, **extra}


class Pace:
    """How far each fast reader got, so the producer stays a few events ahead of the slowest fast reader (the
    test's readers share the engine's loop; unpaced, they would be slow clients themselves)."""

    def __init__(self, readers: int) -> None:
        self.seen = [0] * readers
        self.moved = asyncio.Event()

    async def ahead_by_at_most(self, sent: int, window: int) -> None:
        while min(self.seen) < sent - window:
            self.moved.clear()
            await self.moved.wait()

    async def ids_until(self, n: int, client: SocketClient, last: str) -> list[str]:
        """Item ids of the change events ``client`` receives, up to the one for ``last``."""
        ids: list[str] = []
        while not ids or ids[-1] != last:
            frame = await client.recv(10)
            if frame["event"]["type"] != "sync":
                ids.append(frame["id"])
                self.seen[n] = len(ids)
                self.moved.set()
        return ids


async def test_many_watchers_one_never_reads_and_churn_during_the_burst() -> None:
    # the slow client reads again only once the others are done: its 1013 close waits for it that long (under load,
    # far more than the 10 s default), where a client that never reads again would be reset
    async with Engine(config=engine_config(client_queue_size=8, slow_close_timeout_ms=60_000)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        worker = await Worker.connect(engine.url)
        fast = [await SocketClient.connect(engine, max_size=None) for _ in range(40)]
        for n, client in enumerate(fast):
            await client.join(f"sub{n}", "s", "g")
            await client.join("other", "s", "elsewhere")  # a second group on the same socket
            await client.recv()
            await client.recv()
        slow = await SocketClient.connect(engine, max_queue=1, max_size=None)
        await slow.join("slow", "s", "g")
        await slow.recv()
        churn = [await SocketClient.connect(engine, max_size=None) for _ in range(10)]
        blob = "x" * 256 * 1024  # 25 MiB in all: more than socket buffers plus 8 queued frames

        async def churning(client: SocketClient) -> None:
            for _ in range(5):
                await client.join("c", "s", "g")
                await client.leave("c", "s", "g")
            await client.join("c", "s", "g")  # ends joined: it must see the last event, whatever came before
            frame: dict[str, Any] = {}
            while frame.get("id") != "last":
                frame = await client.recv(10)

        pace = Pace(len(fast))
        readers = [asyncio.ensure_future(pace.ids_until(n, client, str(EVENTS - 1))) for n, client in enumerate(fast)]
        churners = [asyncio.ensure_future(churning(client)) for client in churn]
        for n in range(EVENTS):
            await pace.ahead_by_at_most(n, 4)
            await worker.result("stream::set", item(str(n), data=blob))
            await worker.result("stream::set", item(str(n), group="nobody-watches", data="y"))
        for got in await asyncio.wait_for(asyncio.gather(*readers), 20):
            assert got == [str(n) for n in range(EVENTS)]  # all of them, in order, none twice
        await worker.result("stream::set", item("last", data="z"))
        await asyncio.wait_for(asyncio.gather(*churners), 20)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await slow.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        for client in [*fast, *churn]:
            await client.close()
        await worker.close()
        for _ in range(200):  # the server notices each close on its own connection task
            if not server._clients:
                break
            await asyncio.sleep(0.01)
        assert server._clients == set() and server._watchers == {}


async def test_leave_with_frames_still_queued_and_rejoin_elsewhere() -> None:
    async with Engine(config=engine_config()) as engine:
        server = stream_module(engine).socket
        assert server is not None
        worker = await Worker.connect(engine.url)
        client = await SocketClient.connect(engine)
        await client.join("a", "s", "g")
        await client.recv()
        await client.join("a", "s", "h")  # the same subscription id moves to another group
        assert (await client.recv())["groupId"] == "h"
        await worker.result("stream::set", item("1", group="g", data=1))
        await worker.result("stream::set", item("2", group="h", data=2))
        frame = await client.recv()
        assert (frame["groupId"], frame["id"]) == ("h", "2")  # nothing from g any more
        await client.leave("a", "s", "h")
        await worker.result("stream::set", item("3", group="h", data=3))
        await client.join("b", "s", "g")
        frame = await client.recv()
        assert frame["event"]["type"] == "sync" and frame["groupId"] == "g"
        await client.nothing_for(0.2)  # item 3 of h came after the leave
        assert {key: len(clients) for key, clients in server._watchers.items()} == {("s", "g"): 1}
        await client.close()
        await worker.close()


async def test_joins_past_the_subscription_limit_are_refused_and_a_leave_makes_room() -> None:
    async with Engine(config=engine_config(max_subscriptions_per_client=3)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        client = await SocketClient.connect(engine)
        for n in range(3):
            await client.join(f"s{n}", "s", f"g{n}")
            assert (await client.recv())["event"]["type"] == "sync"
        await client.join("s0", "s", "g9")  # re-using a live subscription id replaces it: not a new entry
        assert (await client.recv())["event"]["type"] == "sync"
        await client.join("s3", "s", "g3")
        refused = await client.recv()
        assert refused["groupId"] == "g3"
        assert refused["event"]["type"] == "error" and refused["event"]["code"] == "too_many_subscriptions"
        assert "at most 3" in refused["event"]["message"]
        assert sum(len(sockets) for sockets in server._watchers.values()) == 3
        await client.leave("s1", "s", "g1")
        await client.join("s3", "s", "g3")
        assert (await client.recv())["event"]["type"] == "sync"
        await client.close()


async def test_clients_past_max_clients_are_refused_naming_the_setting_and_a_leave_makes_room() -> None:
    from websockets.exceptions import InvalidStatus

    async with Engine(config=engine_config(max_clients=2)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        first, second = await SocketClient.connect(engine), await SocketClient.connect(engine)
        for n, client in enumerate((first, second)):  # a sync answer: the socket is served, so it counts
            await client.join(f"s{n}", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
        with pytest.raises(InvalidStatus) as refused:
            await SocketClient.connect(engine)
        assert refused.value.response.status_code == 503
        assert refused.value.response.body == b"too many stream clients connected (max_clients 2)\n"
        await first.close()
        # the server forgets the client in its handler's last step, which no client-side event marks: poll for it
        while len(server._clients) > 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        third = await SocketClient.connect(engine)  # room again
        await third.join("s2", "s", "g")
        assert (await third.recv())["event"]["type"] == "sync"
        await second.close()
        await third.close()
