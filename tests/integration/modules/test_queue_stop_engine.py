"""An engine stop against a real Redis: a job whose handler answered is stored as done (not run again by the next
engine), a job still running goes back and the next engine runs it, a store that hangs does not hold the stop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import Job, QueueCounts

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("configures a Redis-backed queue and restarts the engine")]

QUEUE = "modules::queue::QueueModule"
REDIS_URL = "redis://127.0.0.1:6379/0"
JOBS = "__fn_queue::jobs"
WAIT = 10.0


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    chosen = f"test-{uuid.uuid4()}:"
    yield chosen
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{chosen}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def engine_on(prefix: str, **module: Any) -> Engine:
    # The default 60 s lease: a job the stop left active would not come back within these tests.
    settings = {
        "queue_configs": {"jobs": {"concurrency": 1, "backoff_ms": 50}},
        "adapter": {"class": "modules::queue::RedisAdapter", "config": {"redis_url": REDIS_URL, "key_prefix": prefix}},
        **module,
    }
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, settings)]))


async def counts(prefix: str) -> QueueCounts:
    store = RedisQueueStore(REDIS_URL, key_prefix=prefix)
    try:
        return await store.counts(JOBS)
    finally:
        await store.close()


def gate_ack(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """``RedisQueueStore.ack`` announces it was entered, then waits for the returned gate."""
    entered, gate = asyncio.Event(), asyncio.Event()
    real: Callable[[RedisQueueStore, str, Job], Awaitable[None]] = RedisQueueStore.ack

    async def ack(self: RedisQueueStore, queue: str, job: Job) -> None:
        entered.set()
        await gate.wait()
        await real(self, queue, job)

    monkeypatch.setattr(RedisQueueStore, "ack", ack)
    return entered, gate


async def test_a_job_answered_while_the_engine_stops_is_done_and_not_run_again(
    prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, gate = gate_ack(monkeypatch)
    ran: asyncio.Queue[Any] = asyncio.Queue()

    async def record(data: Any) -> None:
        ran.put_nowait(data["n"])

    first = engine_on(prefix)
    await first.start()
    try:
        async with ModuleWorker(first.url) as worker:
            await worker.function("work", record)
            reply = await worker.call("work", {"n": 1}, action={"type": "enqueue", "queue": "jobs"})
            assert "messageReceiptId" in reply["result"]
            await asyncio.wait_for(entered.wait(), WAIT)
            module = first.module("queue")
            assert isinstance(module, QueueModule)
            loop_task = module._named["jobs"]._loop_task
            assert loop_task is not None
            stopping = asyncio.create_task(first.stop())
            # The store answers the ack once the stop has ended the consumer loop: where a stop that cancels every
            # job task has cancelled this one.
            await asyncio.wait({loop_task}, timeout=WAIT)
            gate.set()
            await asyncio.wait_for(stopping, WAIT)
    finally:
        await first.stop()
    assert await counts(prefix) == QueueCounts(0, 0, 0, 0)
    monkeypatch.undo()

    async with engine_on(prefix) as second, ModuleWorker(second.url) as worker:
        await worker.function("work", record)
        await worker.call("work", {"n": 2}, action={"type": "enqueue", "queue": "jobs"})
        assert [await asyncio.wait_for(ran.get(), WAIT) for _ in range(2)] == [1, 2]
    assert ran.empty()


async def test_a_job_running_when_the_engine_stops_is_run_by_the_next_engine(prefix: str) -> None:
    started = asyncio.Event()

    async def stuck(data: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async with engine_on(prefix) as first, ModuleWorker(first.url) as worker:
        await worker.function("work", stuck)
        await worker.call("work", {"n": 7}, action={"type": "enqueue", "queue": "jobs"})
        await asyncio.wait_for(started.wait(), WAIT)
        await first.stop()  # the worker is still connected: its job goes back unfinished, no attempt spent
    assert await counts(prefix) == QueueCounts(1, 0, 0, 0)

    got: asyncio.Queue[Any] = asyncio.Queue()

    async def record(data: Any) -> None:
        await got.put(data["n"])

    async with engine_on(prefix) as second, ModuleWorker(second.url) as worker:
        await worker.function("work", record)
        assert await asyncio.wait_for(got.get(), WAIT) == 7


async def test_a_store_that_hangs_does_not_hold_the_engine_stop(
    prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    entered, _ = gate_ack(monkeypatch)  # never opened

    async def answer(data: Any) -> None:
        return None

    async with engine_on(prefix, stop_timeout_ms=300) as first, ModuleWorker(first.url) as worker:
        await worker.function("work", answer)
        await worker.call("work", {"n": 1}, action={"type": "enqueue", "queue": "jobs"})
        await asyncio.wait_for(entered.wait(), WAIT)
        with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.consumer"):
            await asyncio.wait_for(first.stop(), WAIT)
    assert [r.getMessage() for r in caplog.records if r.name == "iii_engine.modules.queue.consumer"] == [
        f"queue {JOBS}: the store did not answer within the stop's 300 ms; 1 job(s) left active run again once "
        "their lease (60000 ms) runs out"]
    assert (await counts(prefix)).active == 1
