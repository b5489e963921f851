"""The in-memory queue across steps of the wall clock (an NTP step, a VM resumed): a real engine and worker, the
queue store's clock stepped (a shim over ``iii_engine.modules.queue.store.time``, which ``now_ms`` reads).

Before: a clock stepped +120 s dead-lettered jobs waiting for a missing function 9 s after they were enqueued
("still not registered after 60000 ms"), the grace timed on the wall clock; a clock stepped back 20 s held a job 1 s
into its retry backoff for 21 s more, and a step back of 120 s held jobs past their grace for two minutes. The
store's first answer (moving its due times back with a step back) cut backoffs instead: a retry written just after the
step was moved too, a step forward and its correction halved a 60 s backoff, steps under 100 ms added up unseen; its
delayed due times are now kept on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue import store as store_module
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.store import Claim, DeadLetter, Job, MemoryQueueStore
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("configures named queues")]

QUEUE = "modules::queue::QueueModule"


class SteppedTime(types.SimpleNamespace):
    """The ``time`` module as the queue store sees it: the wall clock plus :attr:`offset_ns`."""

    offset_ns = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    def time(self) -> float:
        return time.time() + self.offset_ns / 1e9


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppedTime:
    # the module's other names as they are (its instance's time_ns and time would hide the methods)
    stepped = SteppedTime(**{n: getattr(time, n) for n in dir(time) if not n.startswith("__") and n not in
                             ("time_ns", "time")})
    monkeypatch.setattr(store_module, "time", stepped)
    return stepped


class Seen:
    """What the store did with each lane since :meth:`watch`: put off by a claim, retried, or dead-lettered."""

    def __init__(self, store: MemoryQueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lanes: dict[str, str] = {}
        self.dead: list[str] = []
        self.retried = 0
        self.watching = False
        claim_next, retry, dead = store.claim_next, store.retry, store.dead

        async def claim_next_seen(queue: str, **kwargs: Any) -> Claim:
            claim = await claim_next(queue, **kwargs)
            if self.watching:
                for lane, _, _ in claim.put_off:
                    self.lanes.setdefault(lane, "put off")
            return claim

        async def retry_seen(queue: str, job: Any, *, due_ms: int) -> None:
            self.retried += 1
            if self.watching:
                self.lanes.setdefault(job.lane, "retried")
            await retry(queue, job, due_ms=due_ms)

        async def dead_seen(queue: str, letter: DeadLetter) -> None:
            self.dead.append(letter.job.lane)
            if self.watching:
                self.lanes[letter.job.lane] = "dead"
            await dead(queue, letter)

        monkeypatch.setattr(store, "claim_next", claim_next_seen)
        monkeypatch.setattr(store, "retry", retry_seen)
        monkeypatch.setattr(store, "dead", dead_seen)


@pytest.fixture
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    queues = request.param
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, {"queue_configs": queues})])
    async with Engine(config=config) as engine:
        yield engine


def _store(engine: Engine) -> MemoryQueueStore:
    module = engine.module("queue")
    assert isinstance(module, QueueModule) and isinstance(module.store, MemoryQueueStore)
    return module.store


GRACE_60S = {"q": {"max_retries": 1, "backoff_ms": 100, "missing_function_grace_ms": 60_000}}


@pytest.mark.parametrize("engine", [GRACE_60S], indirect=True)
async def test_a_clock_stepped_forward_does_not_end_the_missing_function_grace(
        engine: Engine, clock: SteppedTime, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen(_store(engine), monkeypatch)
    ran: list[Any] = []
    async with ModuleWorker(engine.url) as producer:
        for n in range(3):
            reply = await producer.call("away::fn", {"n": n}, action={"type": "enqueue", "queue": "q"})
            assert "error" not in reply, reply
        await until(lambda: seen.retried >= 1)  # the first job put off: the wait began
        clock.offset_ns = 120 * 10**9
        seen.watching = True
        # every job's due time has passed on the stepped clock: each is claimed (or put off by a claim) again
        await until(lambda: len(seen.lanes) >= 3)
        assert seen.dead == [], f"dead-lettered after a +120 s step of a 60 s grace: {seen.lanes}"

        async def handler(data: Any) -> None:
            ran.append(data["n"])

        async with ModuleWorker(engine.url) as worker:
            await worker.function("away::fn", handler)
            await until(lambda: len(ran) == 3)
        stats = await producer.result("engine::queue::topic_stats", {"topic": "q"})
        assert stats["dlq"] == 0, stats


RETRY_1S = {"q": {"max_retries": 3, "backoff_ms": 1000}}


@pytest.mark.parametrize("engine", [RETRY_1S], indirect=True)
async def test_a_clock_stepped_back_does_not_stretch_a_retry_backoff(
        engine: Engine, clock: SteppedTime, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen(_store(engine), monkeypatch)
    runs: list[float] = []

    async def handler(data: Any) -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("first attempt fails")

    async with ModuleWorker(engine.url) as worker:
        await worker.function("job::h", handler)
        await worker.call("job::h", {}, action={"type": "enqueue", "queue": "q"})
        await until(lambda: len(runs) == 1)
        await until(lambda: seen.retried == 1)  # the retry stored, due 1 s after the failure
        clock.offset_ns = -20 * 10**9
        await until(lambda: len(runs) == 2, within=8)  # was 21 s
        assert runs[1] - runs[0] < 3, runs


GRACE_1S = {"q": {"max_retries": 1, "backoff_ms": 100, "missing_function_grace_ms": 1500}}


@pytest.mark.parametrize("engine", [GRACE_1S], indirect=True)
async def test_a_clock_stepped_back_does_not_stretch_the_missing_function_grace(
        engine: Engine, clock: SteppedTime, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen(_store(engine), monkeypatch)
    async with ModuleWorker(engine.url) as producer:
        started = time.monotonic()
        for n in range(3):
            await producer.call("away::fn", {"n": n}, action={"type": "enqueue", "queue": "q"})
        await until(lambda: seen.retried >= 1)
        clock.offset_ns = -120 * 10**9
        await until(lambda: len(seen.dead) == 3, within=10)  # was two minutes more
        assert time.monotonic() - started < 8


RETRY_5S = {"q": {"max_retries": 3, "backoff_ms": 5000}}


@pytest.mark.parametrize("engine", [RETRY_5S], indirect=True)
async def test_a_failure_just_after_a_step_back_keeps_its_backoff(engine: Engine, clock: SteppedTime) -> None:
    # before: the store moved every delayed due time back by the step at its next claim, the retry written after
    # the step (on the new clock already) too: it ran 0.001 s after the failure
    runs: list[float] = []
    release = asyncio.Event()

    async def handler(data: Any) -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            await release.wait()  # in flight while the clock steps
            raise RuntimeError("fails after the step")

    async with ModuleWorker(engine.url) as worker:
        await worker.function("job::h", handler)
        await worker.call("job::h", {}, action={"type": "enqueue", "queue": "q"})
        await until(lambda: len(runs) == 1)
        clock.offset_ns = -60 * 10**9
        failed = time.monotonic()
        release.set()
        await until(lambda: len(runs) == 2, within=15)
        assert runs[1] - failed > 4.5, f"a 5 s backoff cut to {runs[1] - failed:.2f} s by the step"


async def _claimed(store: MemoryQueueStore, count: int = 1) -> list[Job]:
    """``count`` jobs pushed and claimed."""
    for n in range(count):
        await store.push("q", Job.new("q", "f", n))
    claimed = [await store.claim("q", now_ms=store_module.now_ms(), lease_ms=600_000) for _ in range(count)]
    assert None not in claimed
    return [job for job in claimed if job is not None]


async def _retried(store: MemoryQueueStore, job: Job, due_in_ms: int) -> None:
    """``job`` failed, its retry due ``due_in_ms`` from now."""
    await store.retry("q", job, due_ms=store_module.now_ms() + due_in_ms)


async def _left_ms(store: MemoryQueueStore) -> int:
    """How long the queue's first delayed lane still waits, on the clock as it reads now."""
    due = await store.next_due_ms("q")
    assert due is not None
    return due - store_module.now_ms()


async def test_a_retry_written_after_a_step_back_keeps_its_backoff_in_the_store(clock: SteppedTime) -> None:
    store = MemoryQueueStore()
    before, after = await _claimed(store, 2)
    await _retried(store, before, 5000)
    clock.offset_ns = -20 * 10**9
    await _retried(store, after, 5000)  # failed after the step, before any claim saw it
    # before: the claim moved both back 20 s: the second was claimed at once, its 5 s backoff skipped
    assert await store.claim("q", now_ms=store_module.now_ms(), lease_ms=600_000) is None
    assert 4000 < await _left_ms(store) <= 5000


@pytest.mark.parametrize("steps_s", [(30, -30), (-30, 30), (120,), (-120,)], ids=str)
async def test_a_step_either_way_and_its_correction_leave_a_backoff_whole(
        clock: SteppedTime, steps_s: tuple[int, ...]) -> None:
    # before: only steps back were followed, so +30 s then its correction back (or -30 s then forward) cut a 60 s
    # backoff to 30 s, and +120 s ran it at once
    store = MemoryQueueStore()
    await _retried(store, (await _claimed(store))[0], 60_000)
    for step in steps_s:
        clock.offset_ns += step * 10**9
        assert await store.claim("q", now_ms=store_module.now_ms(), lease_ms=600_000) is None
    assert 59_000 < await _left_ms(store) <= 60_000


async def test_small_steps_back_do_not_add_up(clock: SteppedTime) -> None:
    # before: 30 steps of -90 ms, each under the 100 ms the store took for a step, stretched a 5 s backoff to 7.7 s
    store = MemoryQueueStore()
    await _retried(store, (await _claimed(store))[0], 5000)
    for _ in range(30):
        clock.offset_ns -= 90 * 10**6
        assert await store.claim("q", now_ms=store_module.now_ms(), lease_ms=600_000) is None
    assert 4000 < await _left_ms(store) <= 5000
