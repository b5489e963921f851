"""A consumer has its store put off the jobs of a function it has put off lately (``look_for``): the runner sees one
of them, not each, the queue's other jobs run meanwhile, and the put-off lanes still run as soon as the function
registers. What a claim names is bounded (functions and characters).

Before: each such job was claimed and handed to the runner, to be put off with a store round trip of its own; on
Redis 20,000 of them kept a queue's runnable jobs waiting 90 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import pytest
from test_queue_function_wake import Count

from iii_engine.modules.queue import consumer as consumer_module
from iii_engine.modules.queue.consumer import JobNotReady, QueueConsumer
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Claim, Job, MemoryQueueStore

pytestmark = pytest.mark.timeout(30)

LOOK_MS = 60_000
MISSING = 2000


class Named(MemoryQueueStore):
    """Keeps the ``put_off`` each claim named."""

    def __init__(self) -> None:
        super().__init__()
        self.named: list[dict[str, int]] = []

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        self.named.append(dict(put_off or {}))
        return await super().claim_next(queue, now_ms=now_ms, lease_ms=lease_ms, skip_functions=skip_functions,
                                         put_off=put_off)


async def test_the_store_puts_off_a_missing_functions_jobs_and_the_others_run() -> None:
    store, registered = Named(), set[str]()
    handed, ran = Count(), asyncio.Queue[object]()

    async def run(job: Job) -> None:
        if job.function_id not in registered:
            handed.add()
            raise JobNotReady(delay_ms=LOOK_MS, waits_for=job.function_id)
        await ran.put(job.data)

    def look_for(function_id: str, now: int) -> int | None:
        return None if function_id in registered else now + LOOK_MS

    for n in range(MISSING):
        await store.push("q", Job.new("q", "late::fn", n))
    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=1), run, look_for=look_for)
    consumer.start()
    try:
        await asyncio.wait_for(handed.reach(1), 5)
        await store.push("q", Job.new("q", "here::fn", "runnable"))
        registered.add("here::fn")
        consumer.wake()
        assert await asyncio.wait_for(ran.get(), 5) == "runnable"
        # one job went through the runner; the store put off the rest at the consumer's claims
        assert handed.value == 1
        assert (await store.counts("q")).delayed == MISSING
        registered.add("late::fn")
        consumer.functions_changed(registered.__contains__)
        got = {await asyncio.wait_for(ran.get(), 5) for _ in range(MISSING)}  # brought forward, not at their look
        assert got == set(range(MISSING))
    finally:
        await consumer.stop()


async def test_a_claim_names_a_bounded_number_of_functions_and_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "MAX_PUT_OFF_FUNCTIONS", 8)
    monkeypatch.setattr(consumer_module, "PUT_OFF_MAX_CHARS", 5 * 100)
    store, handed = Named(), Count()

    async def run(job: Job) -> None:
        handed.add()
        raise JobNotReady(delay_ms=LOOK_MS, waits_for=job.function_id)

    names = [f"{n:02d}" + "x" * 98 for n in range(12)]  # 100 characters each
    for name in names:
        await store.push("q", Job.new("q", name, name))
    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=1), run,
                             look_for=lambda function_id, now: now + LOOK_MS)
    consumer.start()
    try:
        await asyncio.wait_for(handed.reach(len(names)), 5)
        await store.push("q", Job.new("q", "another", 1))  # one more claim, naming what is put off now
        await asyncio.wait_for(handed.reach(len(names) + 1), 5)
    finally:
        await consumer.stop()
    # never more than fit in the characters, and only functions among the 8 put off last
    assert all(len(named) <= 5 for named in store.named)
    assert set(store.named[-1]) <= {*names[-8:], "another"} and store.named[-1]


async def test_functions_past_the_characters_cost_one_look_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: once the ids put off filled PUT_OFF_MAX_CHARS, each new function made the next claim ask for every
    # function's look again (3,000 functions of 120-character ids: 15.7 million asks, 62.7 s)
    monkeypatch.setattr(consumer_module, "PUT_OFF_MAX_CHARS", 3 * 100)
    store, handed, asked = Named(), Count(), Count()

    async def run(job: Job) -> None:
        handed.add()
        raise JobNotReady(delay_ms=LOOK_MS, waits_for=job.function_id)

    def look_for(function_id: str, now: int) -> int | None:
        asked.add()
        return now + LOOK_MS

    names = [f"{n:03d}" + "x" * 97 for n in range(200)]  # 100 characters each
    for name in names:
        await store.push("q", Job.new("q", name, name))
    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=1), run, look_for=look_for)
    consumer.start()
    try:
        await asyncio.wait_for(handed.reach(len(names)), 10)
    finally:
        await consumer.stop()
    assert asked.value <= 3 * len(names), asked.value
    assert all(len(named) <= 3 for named in store.named)
