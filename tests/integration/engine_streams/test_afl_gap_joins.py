"""Attack on the stream socket's "missed events → close 1013" rule: the store's event connection is cut again
and again (Redis CLIENT KILL, PostgreSQL pg_terminate_backend of the LISTEN backend) while one worker writes an
item 1, 2, 3, … and clients keep joining it. Joins are in flight at every moment, their sync reads on either side
of each cut. The property: a client that is not closed with 1013 never skips a value after its sync (events it
already had in its sync may repeat), and reaches the last value written; a hole is a client that silently missed
changes."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine
from iii_engine.modules.stream.socket import _MISSED
from tests.integration.streams.conftest import delete_redis_keys
from tests.polling import until
from tests.services import require_postgres, require_redis

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = [pytest.mark.our_engine("cuts our engine's store event connection"), pytest.mark.timeout(60)]

CLIENTS = 30
CUTS = 6


@dataclass
class _Tally:
    holes: list[str] = field(default_factory=list)
    resyncs: int = 0
    syncs: int = 0
    last: dict[int, int] = field(default_factory=dict)  # client -> last value it has, while it is open


async def _follow(engine: Engine, stream: str, who: int, tally: _Tally, stop: asyncio.Event,
                  rng: random.Random) -> None:
    """Join, check every value, re-join after each 1013, until ``stop``; then stay until closed or cancelled."""
    while not stop.is_set():
        client = await SocketClient.connect(engine)
        try:
            await _joined_until_closed(client, stream, who, tally, rng)
        finally:
            await client.close()  # also when cancelled at the end: the engine must see every client go


async def _joined_until_closed(client: SocketClient, stream: str, who: int, tally: _Tally,
                               rng: random.Random) -> None:
    """Join and follow the item until closed with 1013 (the caller joins again) or cancelled. A client left
    behind for good is caught by the final check (every open client reaches the last value written), not by a
    read deadline here: a loaded machine's pause made one spurious."""
    await asyncio.sleep(rng.random() * 0.05)  # joins spread over time, so some are in flight at each cut
    await client.join("j", stream, "g", "i")
    try:
        early = []  # changes can come before the sync: the subscription is made before the sync read
        while (frame := json.loads(await client.ws.recv()))["event"]["type"] != "sync":
            early.append(frame["event"]["data"])
        tally.syncs += 1
        last = tally.last[who] = frame["event"]["data"] or 0
        for value in early:
            last = _next(tally, who, last, value)
        while True:
            frame = json.loads(await client.ws.recv())
            last = _next(tally, who, last, frame["event"]["data"])
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1013, _MISSED), closed
        tally.resyncs += 1
        tally.last.pop(who, None)


def _next(tally: _Tally, who: int, last: int, value: int) -> int:
    """The client's latest value once it heard ``value``; a skipped value is a hole."""
    if value <= last:
        return last  # already in its sync: the feed opens before the sync read
    if value != last + 1:
        tally.holes.append(f"client {who} had {last}, then got {value}")
    tally.last[who] = value
    return value


async def _attack(engine: Engine, cut: Callable[[], Awaitable[int]]) -> None:
    stream = f"afl{uuid.uuid4().hex[:10]}"
    rng = random.Random(stream)
    worker = await Worker.connect(engine.url)
    tally = _Tally()
    stop, writing = asyncio.Event(), asyncio.Event()
    written = 0

    async def write() -> None:
        nonlocal written
        while not writing.is_set():
            await worker.result("stream::set", {"stream_name": stream, "group_id": "g", "item_id": "i",
                                                "data": written + 1})
            written += 1

    followers = [asyncio.create_task(_follow(engine, stream, who, tally, stop, rng)) for who in range(CLIENTS)]
    writer = asyncio.create_task(write())
    cuts = 0
    for _ in range(CUTS):
        await asyncio.sleep(0.1 + rng.random() * 0.2)  # a cut at a random moment of the writes and joins
        cuts += await cut()
    stop.set()
    writing.set()
    await writer
    # every client still open must get to the last value; a client cut meanwhile is closed (1013)
    try:
        try:
            await until(lambda: all(v == written for v in tally.last.values()), within=10)
        except AssertionError:
            raise AssertionError(f"open clients left behind (silently): {written} written, they have "
                                 f"{tally.last}; holes: {tally.holes[:10]}") from None
    finally:
        for task in followers:
            task.cancel()
        ended = await asyncio.gather(*followers, return_exceptions=True)
        failed = [repr(e) for e in ended if isinstance(e, Exception)]
        assert not failed, failed[:5]
    await worker.close()
    assert cuts >= CUTS // 2, "the store's event connection was hardly ever cut"
    assert not tally.holes, tally.holes[:10]
    assert tally.resyncs >= 1 and tally.syncs > CLIENTS
    socket = stream_module(engine).socket
    assert socket is not None
    await until(lambda: not socket._clients and not socket.following)


@pytest.mark.redis
async def test_redis_cuts_while_clients_join_leave_no_silent_hole() -> None:
    name = f"afl{uuid.uuid4().hex[:10]}"
    url = require_redis()
    admin = aioredis.Redis.from_url(url)

    async def cut() -> int:
        subscribed = [c["id"] for c in await admin.client_list()
                      if c.get("name") == name and str(c.get("sub", "0")) != "0"]
        for client_id in subscribed:
            await admin.client_kill_filter(_id=client_id)
        return len(subscribed)

    try:
        # a prefix of its own, so a channel of its own ({name}::stream::events): on the server-wide
        # stream::events another test process's writes would flow through this engine's feed
        async with Engine(config=engine_config(store_url=f"{url}?client_name={name}&key_prefix={name}")) as engine:
            await _attack(engine, cut)
    finally:
        await admin.aclose()
        await delete_redis_keys(f"{name}:*")


async def test_postgres_listen_cuts_while_clients_join_leave_no_silent_hole(pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]

    async def cut() -> int:
        conn = await asyncpg.connect(require_postgres())
        try:
            return int(await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 "
                "AND query LIKE 'LISTEN%'", database))
        finally:
            await conn.close()

    async with Engine(config=engine_config(store_url=pg_url)) as engine:
        await _attack(engine, cut)



async def test_postgres_listen_terminated_closes_joined_clients_and_re_joined_ones_follow(pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    stream = f"afl{uuid.uuid4().hex[:10]}"
    item = {"stream_name": stream, "group_id": "g", "item_id": "i"}
    async with Engine(config=engine_config(store_url=pg_url)) as engine:
        worker = await Worker.connect(engine.url)
        joined, idle = await SocketClient.connect(engine), await SocketClient.connect(engine)
        await joined.join("j", stream, "g")
        assert (await joined.recv())["event"] == {"type": "sync", "data": []}
        conn = await asyncpg.connect(require_postgres())
        try:
            assert await conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = $1 AND query LIKE 'LISTEN%'", database) == 1
        finally:
            await conn.close()
        await worker.result("stream::set", {**item, "data": 1})  # made while nothing listens, or just after
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await joined.recv(10)
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, _MISSED)
        # the idle client kept its socket; joining now, it gets the change in its sync and every later one
        await idle.join("j", stream, "g")
        # the change made around the cut may come through the feed too, before or after the sync
        while (frame := await idle.recv())["event"] == {"type": "create", "data": 1}:
            pass
        assert frame["event"] == {"type": "sync", "data": [1]}
        for n in range(2, 12):
            await worker.result("stream::set", {**item, "data": n})
        later = [(await idle.recv())["event"]["data"] for _ in range(10)]
        if later[0] == 1:
            later = [*later[1:], (await idle.recv())["event"]["data"]]
        assert later == list(range(2, 12))
        await idle.close()
        await worker.close()
