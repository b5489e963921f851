"""The in-memory queue across steps of the wall clock (an NTP step, a VM resumed): a real engine and worker, the
queue store's clock stepped (a shim over ``iii_engine.modules.queue.store.time``, which ``now_ms`` reads).

Before: a clock stepped +120 s dead-lettered jobs waiting for a missing function 9 s after they were enqueued
("still not registered after 60000 ms"), the grace timed on the wall clock; a clock stepped back 20 s held a job 1 s
into its retry backoff for 21 s more, and a step back of 120 s held jobs past their grace for two minutes.
"""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue import store as store_module
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.store import Claim, DeadLetter, MemoryQueueStore
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
