"""Attack on the queue module's topic reclaim (62f26df): a topic forgotten with a job in the store, store
bookkeeping left behind by every forgotten topic, and a refusal while a topic that could make room sits idle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis

from iii_engine.modules.queue import module as queue_module
from iii_engine.modules.queue.store import MemoryQueueStore, QueueCounts
from tests.integration.modules.queue_stores import queue_engine

pytestmark = pytest.mark.our_engine("configures queue limits")

REDIS_URL = "redis://127.0.0.1:6379/0"


@asynccontextmanager
async def _redis_adapter() -> AsyncIterator[dict[str, Any]]:
    """A Redis queue adapter under a key prefix of its own, whose keys are deleted afterwards."""
    prefix = f"test-a1-{uuid.uuid4()}:"
    try:
        yield {"class": "modules::queue::RedisAdapter", "config": {"redis_url": REDIS_URL, "key_prefix": prefix}}
    finally:
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _unsubscribe(worker: ModuleWorker, trigger_id: str) -> None:
    await worker.send({"type": "unregistertrigger", "id": trigger_id, "trigger_type": "queue"})
    await worker.sync()


async def _nothing(data: Any) -> None:
    return None


async def test_forgotten_topics_leave_nothing_in_the_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Topics come and go under max_topics: the memory store keeps no bookkeeping for those forgotten (before: one
    queue record per topic name ever seen, so the bound on topics no longer bounded the engine's memory)."""
    monkeypatch.setattr(queue_module, "RECLAIM_INTERVAL_S", 0.0)  # a sweep whenever one is needed
    async with queue_engine(max_topics=2) as (engine, module), ModuleWorker(engine.url) as worker:
        await worker.function("sub::h", _nothing)
        for n in range(30):
            await worker.trigger(f"t{n}", "queue", "sub::h", {"topic": f"topic-{n}"})
            await _unsubscribe(worker, f"t{n}")
        topics = await worker.result("engine::queue::list_topics", {})
        assert len(topics["topics"]) <= 2
        store = module.store
        assert isinstance(store, MemoryQueueStore)
        assert len(store._queues) <= 2  # the store's own table: what it keeps per queue name


async def test_an_enqueue_finished_while_the_sweep_reads_the_store_keeps_its_topic() -> None:
    """An enqueue that starts and stores its job while the sweep waits for the topic's counts (Redis): before,
    the sweep then forgot the topic, so its job was hidden (topic_stats: queue_not_found, not listed)."""
    async with _redis_adapter() as adapter, queue_engine(max_topics=2, adapter=adapter) as (engine, module), \
            ModuleWorker(engine.url) as worker:
        await worker.function("sub::h", _nothing)
        await worker.trigger("t-quiet", "queue", "sub::h", {"topic": "quiet"})
        await _unsubscribe(worker, "t-quiet")  # "quiet": no subscriber, nothing stored
        await worker.trigger("t-busy", "queue", "sub::h", {"topic": "busy"})
        read = asyncio.Event()
        go_on = asyncio.Event()
        counts: Callable[[str], Awaitable[QueueCounts]] = module.store.counts

        async def gated_counts(queue: str) -> QueueCounts:
            found = await counts(queue)
            if queue.endswith("quiet") and not read.is_set():
                read.set()
                await go_on.wait()  # the sweep holds its reading while the enqueue below runs
            return found

        module.store.counts = gated_counts  # type: ignore[method-assign]
        newcomer = asyncio.ensure_future(worker.call("enqueue", {"topic": "newcomer", "data": 1}))
        await asyncio.wait_for(read.wait(), 10)
        assert await worker.result("enqueue", {"topic": "quiet", "data": {"kept": True}}) is None
        go_on.set()
        refused = await newcomer
        stats = await worker.result("engine::queue::topic_stats", {"topic": "quiet"})
        assert stats["waiting"] == 1
        assert refused["error"]["code"] == "enqueue_error"  # "quiet" holds a job, "busy" a subscriber


async def test_a_topic_left_idle_since_the_last_sweep_makes_room_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new topic is refused, then a topic's last subscriber leaves (nothing stored): the next new topic is
    taken at once (before: refused until the sweep's interval passed, with a message saying every topic had jobs
    or subscribers)."""
    monkeypatch.setattr(queue_module, "RECLAIM_INTERVAL_S", 60.0)  # the periodic sweep cannot be what helps
    async with queue_engine(max_topics=2) as (engine, _module), ModuleWorker(engine.url) as worker:
        await worker.function("sub::h", _nothing)
        await worker.trigger("t-a", "queue", "sub::h", {"topic": "a"})
        await worker.trigger("t-b", "queue", "sub::h", {"topic": "b"})
        refused = await worker.call("enqueue", {"topic": "c", "data": 1})
        assert refused["error"]["code"] == "enqueue_error"
        await _unsubscribe(worker, "t-a")
        assert await worker.result("enqueue", {"topic": "c", "data": 1}) is None
        topics = await worker.result("engine::queue::list_topics", {})
        assert sorted(t["topic"] for t in topics["topics"]) == ["b", "c"]


async def test_a_fifo_topic_forgotten_while_its_subscriber_is_away_keeps_its_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A FIFO topic's subscriber leaves (a worker reconnecting), the topic is forgotten to make room, jobs are
    enqueued, the subscriber comes back: the jobs run one at a time in order, as when the topic was kept (before:
    the topic came back standard, its jobs were stored each in its own lane and ran all at once)."""
    monkeypatch.setattr(queue_module, "RECLAIM_INTERVAL_S", 0.0)
    fifo = {"topic": "orders", "queue_config": {"type": "fifo", "concurrency": 10}}
    seen: list[int] = []
    running = 0
    most = 0
    all_seen = asyncio.Event()

    async def handle(data: Any) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)  # a job that takes a moment: a parallel one would start meanwhile
        seen.append(data["n"])
        running -= 1
        if len(seen) == 5:
            all_seen.set()

    async with queue_engine(max_topics=2) as (engine, _module), ModuleWorker(engine.url) as worker:
        await worker.function("sub::h", handle)
        await worker.trigger("t-orders", "queue", "sub::h", fifo)
        await _unsubscribe(worker, "t-orders")  # away for a moment
        await worker.trigger("t-x", "queue", "sub::h", {"topic": "x"})
        await worker.trigger("t-y", "queue", "sub::h", {"topic": "y"})  # room made: "orders" forgotten
        await _unsubscribe(worker, "t-y")
        topics = await worker.result("engine::queue::list_topics", {})
        assert sorted(t["topic"] for t in topics["topics"]) == ["x", "y"]
        for n in range(5):
            assert await worker.result("enqueue", {"topic": "orders", "data": {"n": n}}) is None
        await worker.trigger("t-orders", "queue", "sub::h", fifo)  # back
        await asyncio.wait_for(all_seen.wait(), 10)
        assert (seen, most) == ([0, 1, 2, 3, 4], 1)


async def test_a_new_topic_asked_for_during_a_sweep_gets_the_room_it_makes() -> None:
    """Two new topics at max_topics while two topics are idle (Redis store, so the sweep waits on the store): the
    second request waits for the sweep under way instead of being refused at once while it frees room."""
    async with _redis_adapter() as adapter, queue_engine(max_topics=2, adapter=adapter) as (engine, module), \
            ModuleWorker(engine.url) as worker:
        await worker.function("sub::h", _nothing)
        for name in ("idle-1", "idle-2"):
            await worker.trigger(f"t-{name}", "queue", "sub::h", {"topic": name})
            await _unsubscribe(worker, f"t-{name}")
        read = asyncio.Event()
        go_on = asyncio.Event()
        counts: Callable[[str], Awaitable[QueueCounts]] = module.store.counts

        async def gated_counts(queue: str) -> QueueCounts:
            found = await counts(queue)
            read.set()
            await go_on.wait()
            return found

        module.store.counts = gated_counts  # type: ignore[method-assign]
        first = asyncio.ensure_future(worker.call("enqueue", {"topic": "new-1", "data": 1}))
        await asyncio.wait_for(read.wait(), 10)
        second = asyncio.ensure_future(worker.call("enqueue", {"topic": "new-2", "data": 2}))
        await worker.sync()  # the second request has reached the module
        go_on.set()
        assert "error" not in await first
        assert "error" not in await second
        topics = await worker.result("engine::queue::list_topics", {})
        assert sorted(t["topic"] for t in topics["topics"]) == ["new-1", "new-2"]
