"""Attack on the queue stop inside a real engine on a real Redis: a FIFO queue stopped with jobs done, running and
waiting in every lane, then a second engine on the same store: every job completes exactly once, in order per
group, and the stopped engine leaves no queue task behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import test_queue_stop_engine
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import Job, QueueCounts

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("configures a Redis-backed queue and restarts the engine")]

QUEUE = "modules::queue::QueueModule"
REDIS_URL = "redis://127.0.0.1:6379/0"
JOBS = "__fn_queue::jobs"
WAIT = 10.0
GROUPS = "ABC"
PER_GROUP = 5
prefix = test_queue_stop_engine.prefix  # the fixture: a Redis key prefix of this test's own, dropped after


def engine_on(prefix: str) -> Engine:
    settings = {
        "queue_configs": {"jobs": {"type": "fifo", "message_group_field": "g", "concurrency": 3}},
        "adapter": {"class": "modules::queue::RedisAdapter", "config": {"redis_url": REDIS_URL, "key_prefix": prefix}},
    }
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, settings)]))


def queue_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("queue-")}


def count_acks(monkeypatch: pytest.MonkeyPatch, wanted: int) -> asyncio.Event:
    """Set once ``wanted`` acks have been stored."""
    stored, acks = asyncio.Event(), [0]
    real: Callable[[RedisQueueStore, str, Job], Awaitable[None]] = RedisQueueStore.ack

    async def ack(self: RedisQueueStore, queue: str, job: Job) -> None:
        await real(self, queue, job)
        acks[0] += 1
        if acks[0] == wanted:
            stored.set()

    monkeypatch.setattr(RedisQueueStore, "ack", ack)
    return stored


async def test_a_fifo_queue_stopped_mid_lanes_completes_every_job_once_in_order_on_the_next_engine(
    prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocked = {("A", 2), ("B", 0)}  # A0, A1 and all of C end on the first engine; A2 and B0 are running at its stop
    completed: list[tuple[str, int]] = []
    entered = asyncio.Semaphore(0)
    all_done = asyncio.Event()

    async def first_engine_handler(data: Any) -> None:
        if (data["g"], data["n"]) in blocked:
            entered.release()
            await asyncio.Event().wait()
        completed.append((data["g"], data["n"]))

    acked = count_acks(monkeypatch, len(GROUPS) * PER_GROUP - 8)
    first = engine_on(prefix)
    await first.start()
    try:
        async with ModuleWorker(first.url) as worker:
            await worker.function("work", first_engine_handler)
            for n in range(PER_GROUP):
                for g in GROUPS:
                    reply = await worker.call("work", {"g": g, "n": n}, action={"type": "enqueue", "queue": "jobs"})
                    assert "messageReceiptId" in reply["result"]
            for _ in blocked:
                await asyncio.wait_for(entered.acquire(), WAIT)
            await asyncio.wait_for(acked.wait(), WAIT)
            await asyncio.wait_for(first.stop(), WAIT)
            assert queue_tasks() == set()
    finally:
        await first.stop()
    monkeypatch.undo()
    store = RedisQueueStore(REDIS_URL, key_prefix=prefix)
    try:
        assert await store.counts(JOBS) == QueueCounts(8, 0, 0, 0)
    finally:
        await store.close()

    async def second_engine_handler(data: Any) -> None:
        completed.append((data["g"], data["n"]))
        if len(completed) == len(GROUPS) * PER_GROUP:
            all_done.set()

    async with engine_on(prefix) as second, ModuleWorker(second.url) as worker:
        await worker.function("work", second_engine_handler)
        await asyncio.wait_for(all_done.wait(), WAIT)
    assert queue_tasks() == set()
    for g in GROUPS:
        assert [n for group, n in completed if group == g] == list(range(PER_GROUP))
    assert len(completed) == len(GROUPS) * PER_GROUP
