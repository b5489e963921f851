"""Attack A-Q on the Redis queue store: a push whose reply was lost after Redis ran it.

With a ``redis_url`` that asks redis-py to retry (``?socket_timeout=…&retry_on_timeout=true``), a push whose answer
is late runs a second time for the same job. It used to store the job id twice in its lane: once the job was done,
the lane's head named a job that no longer existed, the claim returned nothing for it and held the lane, and in a
FIFO group every later message stayed behind it for good (counted as neither waiting nor dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import Job, QueueCounts
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("configures a Redis-backed queue through a proxy")]

WAIT = 5.0
MARK = b"aq-lose-this-reply"


class ReplyLosingProxy:
    """A TCP proxy to Redis: the first command carrying :data:`MARK` reaches Redis, and its reply is swallowed
    (Redis ran it; the client never hears so and times out)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.lost = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        swallow_next_reply = asyncio.Event()

        async def up() -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    if MARK in data and not self.lost:
                        swallow_next_reply.set()
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()

        async def down() -> None:
            with contextlib.suppress(Exception):
                while data := await up_reader.read(65536):
                    if swallow_next_reply.is_set():
                        swallow_next_reply.clear()
                        self.lost += 1
                        continue
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()
            up_writer.close()

        for job in (up(), down()):
            task = asyncio.ensure_future(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url = require_redis()
    chosen = f"aq-{uuid.uuid4().hex[:12]}:"
    yield chosen
    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{chosen}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_fifo_group_goes_on_after_a_push_whose_reply_was_lost(prefix: str) -> None:
    host, port = require_redis().split("//")[1].split("/")[0].split(":")
    proxy = ReplyLosingProxy(host, int(port))
    url = await proxy.start() + "?socket_timeout=0.5&retry_on_timeout=true"
    # A short lease: the old code's held lane came back every 300 ms and was held again, never letting n=2 run.
    settings = {
        "queue_configs": {"orders": {"type": "fifo", "message_group_field": "g", "backoff_ms": 10, "lease_ms": 300}},
        "adapter": {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": prefix}},
    }
    ran: asyncio.Queue[int] = asyncio.Queue()
    enqueued = asyncio.Event()

    async def record(data: Any) -> None:
        await enqueued.wait()  # the first job still runs when its push is retried
        ran.put_nowait(data["n"])

    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::queue::QueueModule", settings)]))
    try:
        async with engine, ModuleWorker(engine.url) as worker:
            await worker.function("work", record)
            for n, extra in ((1, MARK.decode()), (2, "")):
                reply = await worker.call("work", {"g": "x", "n": n, "m": extra},
                                          action={"type": "enqueue", "queue": "orders"})
                assert "messageReceiptId" in reply["result"], reply
            assert proxy.lost == 1  # the fault happened: the first push's reply never came back
            enqueued.set()
            assert [await asyncio.wait_for(ran.get(), WAIT) for _ in range(2)] == [1, 2]
    finally:
        await proxy.close()


async def test_a_repeated_push_stores_the_job_once(prefix: str) -> None:
    store = RedisQueueStore(require_redis(), key_prefix=prefix)
    try:
        job = Job.new("q", "fn", {"n": 1})
        assert await store.push("q", job) and await store.push("q", job)  # the retry of the same push
        assert await store.counts("q") == QueueCounts(1, 0, 0, 0)
        claimed = await store.claim("q", now_ms=0, lease_ms=1000)
        assert claimed is not None and claimed.id == job.id
        await store.ack("q", claimed)
        assert await store.counts("q") == QueueCounts(0, 0, 0, 0)
        assert await store.claim("q", now_ms=0, lease_ms=1000) is None
        assert await store.counts("q") == QueueCounts(0, 0, 0, 0)  # no lane held for a job that is gone
    finally:
        await store.close()


async def test_a_lane_left_naming_a_finished_job_is_repaired_by_the_claim(prefix: str) -> None:
    # What the old push left in a store: the lane of group g names the done job `gone` ahead of `second`.
    store = RedisQueueStore(require_redis(), key_prefix=prefix)
    client = aioredis.Redis.from_url(require_redis())
    try:
        first, second = Job.new("q", "fn", {"n": 1}, group="g"), Job.new("q", "fn", {"n": 2}, group="g")
        await store.push("q", first)
        await store.push("q", second)
        await client.lpush(f"{prefix}queue:q:lane:g:g", "gone")
        claimed = [await store.claim("q", now_ms=0, lease_ms=1000)]
        assert claimed[0] is not None
        await store.ack("q", claimed[0])
        claimed.append(await store.claim("q", now_ms=0, lease_ms=1000))
        assert [job.data["n"] if job else None for job in claimed] == [1, 2]
    finally:
        await client.aclose()
        await store.close()
