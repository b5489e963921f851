"""A consumer told that functions changed runs the jobs it put off for a function now registered: also when the
change comes while such a job is still being put off, and for at most ``MAX_WAITING_LANES`` remembered lanes (the
rest wait for their planned look)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from iii_engine.modules.queue import consumer as consumer_module
from iii_engine.modules.queue.consumer import JobNotReady, QueueConsumer
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Job, MemoryQueueStore

pytestmark = pytest.mark.timeout(30)

PUT_OFF_MS = 60_000  # the planned look: far past every bound below
PROMPT_S = 2.0


class Count:
    """A count that can be awaited: ``await count.reach(n)`` returns once it is ``n`` or more."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = asyncio.Event()

    def add(self) -> None:
        self.value += 1
        self._changed.set()

    async def reach(self, n: int) -> None:
        while self.value < n:
            self._changed.clear()
            await self._changed.wait()


class GatedRetry(MemoryQueueStore):
    """Holds each retry (a job put off) until :attr:`go` is set; :attr:`retried` counts those stored."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.retried = Count()

    async def retry(self, queue: str, job: Job, *, due_ms: int) -> None:
        self.entered.set()
        await self.go.wait()
        await super().retry(queue, job, due_ms=due_ms)
        self.retried.add()


@dataclass
class Runner:
    """Puts off every job while ``"late::fn"`` is not in :attr:`registered`; :attr:`ran` counts the jobs run."""

    registered: set[str] = field(default_factory=set)
    ran: Count = field(default_factory=Count)

    async def __call__(self, job: Job) -> None:
        if "late::fn" not in self.registered:
            raise JobNotReady("late::fn", delay_ms=PUT_OFF_MS, waits_for="late::fn")
        self.ran.add()


async def test_a_change_while_the_job_is_put_off_still_runs_it_promptly() -> None:
    store, runner = GatedRetry(), Runner()
    consumer = QueueConsumer(store, "q", QueueSettings(), runner)
    consumer.start()
    try:
        store.go.set()
        await store.push("q", Job.new("q", "late::fn", 1))
        consumer.wake()
        await asyncio.wait_for(store.retried.reach(1), PROMPT_S)  # the first job is put off and remembered
        store.go.clear()
        store.entered.clear()
        await store.push("q", Job.new("q", "late::fn", 2))
        consumer.wake()
        await asyncio.wait_for(store.entered.wait(), PROMPT_S)  # the second is being put off, not stored yet
        runner.registered.add("late::fn")
        consumer.functions_changed(runner.registered.__contains__)
        # the consumer looks now: the first job runs, the second's lane is still held, so it is not moved
        await asyncio.wait_for(runner.ran.reach(1), PROMPT_S)
        store.go.set()
        await asyncio.wait_for(runner.ran.reach(2), PROMPT_S)  # once stored, its own step looks again
    finally:
        await consumer.stop()


async def test_lanes_past_the_bound_wait_for_their_look(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "MAX_WAITING_LANES", 2)
    store, runner = GatedRetry(), Runner()
    store.go.set()
    consumer = QueueConsumer(store, "q", QueueSettings(), runner)
    consumer.start()
    try:
        for n in range(3):
            await store.push("q", Job.new("q", "late::fn", n))
        consumer.wake()
        await asyncio.wait_for(store.retried.reach(3), PROMPT_S)
        runner.registered.add("late::fn")
        consumer.functions_changed(runner.registered.__contains__)
        await asyncio.wait_for(runner.ran.reach(2), PROMPT_S)  # the two lanes remembered run now
        counts = await store.counts("q")
        assert (counts.delayed, runner.ran.value) == (1, 2)  # the third waits for its look, a minute away
    finally:
        await consumer.stop()
