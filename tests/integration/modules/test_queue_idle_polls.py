"""Idle queues are not polled every ``poll_interval_ms``, and made-up topics cannot take every one of ``max_topics``.

Before: every topic's consumer polled its store every 100 ms even with nothing to do (10,000 topics with a job and no
subscriber: 0.94 of a core for good; 1,000 idle subscribed topics on Redis: 0.72 of a core, 10,700 commands a
second), and one worker's enqueues to 10,000 made-up topics left another worker's ``queue`` trigger and enqueues
refused (max_topics) until a restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis

from iii_engine.modules.queue.consumer import QueueConsumer
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Claim, Job, MemoryQueueStore, now_ms
from tests.integration.modules.queue_stores import queue_engine
from tests.polling import until

pytestmark = pytest.mark.our_engine("queue polling and topic bounds")

WINDOW_S = 0.6  # a measuring window, not a wait for something to happen


class CountingStore(MemoryQueueStore):
    """The in-memory store, counting its claims."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim_next(self, queue: str, **kwargs: Any) -> Claim:
        self.claims += 1
        return await super().claim_next(queue, **kwargs)


@asynccontextmanager
async def _consumer(store: MemoryQueueStore, settings: QueueSettings, ran: asyncio.Queue[Any], *,
                    shared: bool = False) -> AsyncIterator[QueueConsumer]:
    """A consumer of ``store``; ``shared``: as if other engines changed it (Redis), so an idle queue is polled."""
    async def run(job: Job) -> None:
        ran.put_nowait(job.data)

    consumer = QueueConsumer(store, "q", settings, run, poll_idle=shared)
    consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def test_an_idle_queue_in_memory_is_not_polled_and_still_runs_a_pushed_job_at_once() -> None:
    store, ran = CountingStore(), asyncio.Queue[Any]()
    async with _consumer(store, QueueSettings(poll_interval_ms=10), ran) as consumer:
        await until(lambda: store.claims >= 1)
        before = store.claims
        await asyncio.sleep(WINDOW_S)
        assert store.claims - before <= 1  # was one claim per 10 ms: about 60
        await store.push("q", Job.new("q", "fn", "now"))
        consumer.wake()
        assert await asyncio.wait_for(ran.get(), 5) == "now"


async def test_a_delayed_job_in_memory_runs_when_due_without_polling() -> None:
    store, ran = CountingStore(), asyncio.Queue[Any]()
    async with _consumer(store, QueueSettings(poll_interval_ms=10_000), ran) as consumer:
        job = Job.new("q", "fn", "later")
        await store.push("q", job)
        claimed = await store.claim("q", now_ms=0, lease_ms=60_000)
        assert claimed is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        await store.retry("q", claimed, due_ms=now_ms() + 200)
        consumer.wake()
        assert await asyncio.wait_for(ran.get(), 5) == "later"
        assert loop.time() - began < 5  # due at 200 ms; with no idle poll, only its due time brings it


async def test_an_idle_queue_on_a_shared_store_backs_off_and_a_wake_polls_at_once() -> None:
    store, ran = CountingStore(), asyncio.Queue[Any]()
    settings = QueueSettings(poll_interval_ms=10, idle_poll_max_ms=200)
    async with _consumer(store, settings, ran, shared=True) as consumer:
        await until(lambda: store.claims >= 1)
        await asyncio.sleep(WINDOW_S)  # backs off to 200 ms meanwhile
        before = store.claims
        await asyncio.sleep(WINDOW_S)
        assert 1 <= store.claims - before <= 5  # about 3 at 200 ms; was about 60 at 10 ms
        # another engine's push (not woken): seen within idle_poll_max_ms
        loop = asyncio.get_running_loop()
        began = loop.time()
        await store.push("q", Job.new("q", "fn", "elsewhere"))
        assert await asyncio.wait_for(ran.get(), 5) == "elsewhere"
        assert loop.time() - began < 1.0
        # this engine's push wakes it at once
        await store.push("q", Job.new("q", "fn", "here"))
        consumer.wake()
        assert await asyncio.wait_for(ran.get(), 0.15) == "here"


async def test_made_up_topics_stop_at_max_unsubscribed_topics_and_triggers_still_get_topics() -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(data: Any) -> None:
        got.put_nowait(data)

    async with queue_engine(max_topics=6, max_unsubscribed_topics=3) as (engine, _), \
            ModuleWorker(engine.url) as flooder, ModuleWorker(engine.url) as other:
        for n in range(3):
            assert await flooder.result("enqueue", {"topic": f"junk-{n}", "data": n}) is None
        refused = await flooder.call("enqueue", {"topic": "junk-3", "data": 3})
        assert refused["error"] == {
            "code": "enqueue_error",
            "message": "Topic 'junk-3' refused: the queue module keeps 3 topics with no subscriber "
                       "(max_unsubscribed_topics 3), each holding jobs"}
        assert await flooder.result("enqueue", {"topic": "junk-0", "data": "again"}) is None  # a known topic
        await other.function("b::h", handle)
        await other.trigger("b", "queue", "b::h", {"topic": "b-topic"})
        assert await other.result("enqueue", {"topic": "b-topic", "data": "hello"}) is None
        assert await asyncio.wait_for(got.get(), 5) == "hello"


async def test_the_modules_idle_queues_and_topics_in_memory_are_not_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    claims: list[str] = []
    claim_next = MemoryQueueStore.claim_next

    async def counted(self: MemoryQueueStore, queue: str, **kwargs: Any) -> Claim:
        claims.append(queue)
        return await claim_next(self, queue, **kwargs)

    monkeypatch.setattr(MemoryQueueStore, "claim_next", counted)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(data: Any) -> None:
        got.put_nowait(data)

    async with queue_engine(queue_configs={"q": {"poll_interval_ms": 10}}) as (engine, _), \
            ModuleWorker(engine.url) as worker:
        await worker.function("w::h", handle)
        await worker.trigger("t", "queue", "w::h", {"topic": "subscribed", "queue_config": {}})
        assert await worker.result("enqueue", {"topic": "nobody", "data": 1}) is None
        assert await worker.result("enqueue", {"topic": "subscribed", "data": "first"}) is None
        assert await asyncio.wait_for(got.get(), 5) == "first"
        before = len(claims)
        await asyncio.sleep(WINDOW_S)
        assert len(claims) - before <= 2  # was about 60 for the named queue and 6 for each topic
        assert await worker.result("enqueue", {"topic": "subscribed", "data": "second"}) is None
        assert await asyncio.wait_for(got.get(), 5) == "second"


async def test_an_idle_poll_is_one_call_to_the_store() -> None:
    """A claim that finds nothing ready says when the next delayed job is due: an idle poll of a shared store (Redis)
    is one round trip, not two (1,000 idle topics on Redis: 1,561 commands a second with two)."""
    reads: list[str] = []

    class Store(CountingStore):
        async def next_due_ms(self, queue: str) -> int | None:
            reads.append(queue)
            return await super().next_due_ms(queue)

    store, ran = Store(), asyncio.Queue[Any]()
    async with _consumer(store, QueueSettings(poll_interval_ms=10, idle_poll_max_ms=20), ran, shared=True):
        await until(lambda: store.claims >= 10)
    assert reads == []


async def test_a_redis_claim_finding_nothing_ready_tells_the_next_due_time() -> None:
    prefix = f"test-qidle-{uuid.uuid4()}:"
    store = RedisQueueStore("redis://127.0.0.1:6379/0", key_prefix=prefix)
    try:
        empty = await store.claim_next("q", now_ms=now_ms(), lease_ms=60_000)
        assert (empty.job, empty.due_known, empty.next_due_ms) == (None, True, None)
        await store.push("q", Job.new("q", "fn", 1))
        claimed = await store.claim("q", now_ms=now_ms(), lease_ms=60_000)
        assert claimed is not None
        due = now_ms() + 5000
        await store.retry("q", claimed, due_ms=due)
        later = await store.claim_next("q", now_ms=now_ms(), lease_ms=60_000)
        assert later.job is None and later.due_known and later.next_due_ms is not None
        assert abs(later.next_due_ms - due) < 100
        assert abs(later.next_due_ms - (await store.next_due_ms("q") or 0)) < 100
    finally:
        client = Redis.from_url("redis://127.0.0.1:6379/0")
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.close()
