"""Attacks on the stream socket's "missed events → close 1013" rule with a private redis-server stopped and
started: clients joining again and again while Redis is down (each answered, none hangs, no busy loop, no task or
connection growth), every client told to re-sync once Redis is back and a re-joined client given every later
change; engine start/stop cycles (also a stop while Redis is down) leaving no connection of the engine's behind."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine, EngineConfig
from iii_engine.modules.stream.socket import _MISSED
from tests.integration.streams.private_redis import PrivateRedis
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("stops the Redis under our engine"),
              pytest.mark.timeout(30)]


def _config(url: str, **stream: Any) -> EngineConfig:
    adapter = {"class": "modules::stream::adapters::RedisAdapter", "config": {"redis_url": url}}
    config: EngineConfig = engine_config(adapter=adapter, **stream)
    return config


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as running:
        await running.start()
        yield running


async def _connections(server: PrivateRedis, name: str) -> tuple[int, int]:
    """Connections named ``name``: all of them, and those subscribed to something."""
    admin = aioredis.Redis.from_url(server.url)
    try:
        mine = [c for c in await admin.client_list() if c.get("name") == name]
    finally:
        await admin.aclose()
    return len(mine), sum(1 for c in mine if str(c.get("sub", "0")) != "0")


async def _answer(client: SocketClient, within: float) -> str:
    """What a join got: ``sync``, an ``error`` event's code, or ``close <code>``."""
    try:
        frame = await client.recv(within)
    except ConnectionClosed as closed:
        return f"close {closed.rcvd.code if closed.rcvd else None}"
    event = frame["event"]
    return str(event["type"] if event["type"] != "error" else event["code"])


async def test_joins_while_redis_is_down_are_answered_then_told_to_re_sync(server: PrivateRedis) -> None:
    name = f"afl{uuid.uuid4().hex[:10]}"
    url = f"{server.url}?client_name={name}"
    async with Engine(config=_config(url, join_timeout_ms=3000, slow_close_timeout_ms=2000)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
        await worker.result("stream::set", {**item, "data": 0})
        steady = await SocketClient.connect(engine)
        await steady.join("j", "s", "g", "i")
        assert (await steady.recv())["event"] == {"type": "sync", "data": 0}
        tasks_before = len(asyncio.all_tasks())

        server.stop()
        # clients join over and over while Redis is down: each gets an error event or a 1013, within the join timeout
        waiting: list[SocketClient] = []
        answers: dict[str, int] = {}
        for _ in range(20):
            client = await SocketClient.connect(engine)
            await client.join("j", "s", "g", "i")
            answer = await _answer(client, 5)
            answers[answer] = answers.get(answer, 0) + 1
            if answer.startswith("close"):
                await client.close()
            else:
                waiting.append(client)  # joined without a sync: told to re-sync once Redis is back
        assert set(answers) <= {"sync_failed", "join_timeout", "close 1013"}, answers
        # nothing spins meanwhile: the engine (this process) is idle while Redis stays down
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(2)  # an absence (of CPU use) over a span of time: nothing to await instead
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
        assert used < 0.25, f"{used:.0%} of a CPU used while Redis was down"
        # each connected client has its own few tasks (both ends here), and nothing grows with the join attempts
        assert len(asyncio.all_tasks()) <= tasks_before + 6 * len(waiting)

        await server.start()
        # every client that was joined (the steady one, those without a sync) is told to re-sync
        for client in [steady, *waiting]:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await client.recv(10)
            assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1013, _MISSED)
        # a client that joins again gets its sync and then every change, in order
        again = await SocketClient.connect(engine)
        await again.join("j", "s", "g", "i")
        assert (await again.recv())["event"] == {"type": "sync", "data": 0}
        for n in range(1, 21):
            await worker.result("stream::set", {**item, "data": n})
        assert [(await again.recv())["event"]["data"] for _ in range(20)] == list(range(1, 21))
        await again.close()
        await until(lambda: not socket._clients and not socket.following)
        assert (await _connections(server, name))[1] == 0  # the feed's connection went with the last client
        await until(lambda: len(asyncio.all_tasks()) <= tasks_before, within=5)
        await worker.close()
    assert await _connections(server, name) == (0, 0)


async def test_start_stop_cycles_leave_no_connection(server: PrivateRedis) -> None:
    name = f"afl{uuid.uuid4().hex[:10]}"
    url = f"{server.url}?client_name={name}"
    for cycle in range(4):
        async with Engine(config=_config(url)) as engine:
            assert (await _connections(server, name))[1] == 0, "the start probe's connection stayed subscribed"
            client = await SocketClient.connect(engine)
            await client.join("j", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
            assert (await _connections(server, name))[1] == 1
            if cycle % 2:
                await client.close()  # the last client gone closes the feed; else the stop does
                await until(lambda: not stream_module(engine).socket.following)  # type: ignore[union-attr]
        assert await _connections(server, name) == (0, 0), f"cycle {cycle}"


async def test_a_stop_while_redis_is_down_leaves_nothing_that_reconnects(server: PrivateRedis) -> None:
    name = f"afl{uuid.uuid4().hex[:10]}"
    url = f"{server.url}?client_name={name}"
    tasks_before = len(asyncio.all_tasks())
    async with Engine(config=_config(url, join_timeout_ms=2000)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        subscribed = await SocketClient.connect(engine)
        await subscribed.join("j", "s", "g")
        assert (await subscribed.recv())["event"]["type"] == "sync"
        server.stop()  # the feed's connection is lost: the store re-subscribes with backoff
        idle = await SocketClient.connect(engine)  # keeps the feed open while the pump cannot subscribe
        late = await SocketClient.connect(engine)
        await late.join("j", "s", "g")
        assert await _answer(late, 5) in ("sync_failed", "join_timeout", "close 1013")
        began = time.monotonic()
    assert time.monotonic() - began < 5, "the engine's stop waited on the Redis that is down"
    await until(lambda: len(asyncio.all_tasks()) <= tasks_before, within=5)
    await server.start()
    await asyncio.sleep(2.5)  # an absence (a reconnect after the stop) over the longest backoff: nothing to await
    assert await _connections(server, name) == (0, 0)
    del idle
