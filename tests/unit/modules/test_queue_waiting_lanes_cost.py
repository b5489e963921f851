"""What remembering the lanes put off for a missing function costs, and how long a lane is remembered.

A change to the registered functions looks at each function waited for once, not at each lane: before, every change
(any function) woke every consumer with remembered lanes, which asked ``registered`` once per lane (up to 4,096 a
queue): 4 queues of 4,200 waiting jobs and 2,000 unrelated registrations took 32 s of CPU. The module's record of
missing functions asks once per function, not once per queue and function.

A lane is forgotten once its planned look is due: a lane another engine sharing the store ran stayed remembered for
good, and once they filled the bound, no lane put off later ran promptly when its function registered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import pytest
from test_queue_function_wake import PROMPT_S, PUT_OFF_MS, Count, GatedRetry, Runner

from iii_engine.modules.queue import consumer as consumer_module
from iii_engine.modules.queue.consumer import JobNotReady, QueueConsumer
from iii_engine.modules.queue.module import FunctionNotRegistered, MissingFunctions
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Claim, Job

pytestmark = pytest.mark.timeout(30)


class CountedClaims(GatedRetry):
    """:attr:`claims` counts the claims asked for (each poll of the consumer asks at least one)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = Count()

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        try:
            return await super().claim_next(queue, now_ms=now_ms, lease_ms=lease_ms, skip_functions=skip_functions,
                                           put_off=put_off)
        finally:
            self.claims.add()


async def test_unrelated_changes_look_once_per_function_waited_for_not_once_per_lane() -> None:
    lanes, changes = 200, 20
    store, runner = CountedClaims(), Runner()
    store.go.set()
    consumer = QueueConsumer(store, "q", QueueSettings(), runner)
    consumer.start()
    asked: list[str] = []

    def unrelated(function_id: str) -> bool:
        asked.append(function_id)
        return False

    try:
        for n in range(lanes):
            await store.push("q", Job.new("q", "late::fn", n))
        consumer.wake()
        await asyncio.wait_for(store.retried.reach(lanes), PROMPT_S)  # every lane put off and remembered
        for _ in range(changes):
            polls = store.claims.value
            consumer.functions_changed(unrelated)
            consumer.wake()
            await asyncio.wait_for(store.claims.reach(polls + 1), PROMPT_S)  # the consumer polled since
        assert len(asked) <= changes, f"{len(asked)} looks for {changes} changes of functions none waits for"
        assert set(asked) == {"late::fn"}
        runner.registered.add("late::fn")
        consumer.functions_changed(runner.registered.__contains__)
        await asyncio.wait_for(runner.ran.reach(lanes), PROMPT_S)  # all still run as soon as it registers
    finally:
        await consumer.stop()


async def test_lanes_another_engine_ran_are_forgotten_once_their_look_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "MAX_WAITING_LANES", 3)
    clock = [1_000_000]
    monkeypatch.setattr(consumer_module, "now_ms", lambda: clock[0])  # the store is told the consumer's times
    claiming = [True]
    store, runner = GatedRetry(), Runner()
    store.go.set()
    consumer = QueueConsumer(store, "q", QueueSettings(), runner, can_claim=lambda: claiming[0])
    consumer.start()
    try:
        for n in range(3):
            await store.push("q", Job.new("q", "late::fn", n))
        consumer.wake()
        await asyncio.wait_for(store.retried.reach(3), PROMPT_S)  # three lanes remembered: the bound is full
        claiming[0] = False
        clock[0] += PUT_OFF_MS  # their look is due, and another engine sharing the store runs them
        for _ in range(3):
            job = await store.claim("q", now_ms=clock[0], lease_ms=1000)
            assert job is not None
            await store.ack("q", job)
        claiming[0] = True
        await store.push("q", Job.new("q", "late::fn", 3))
        consumer.wake()
        await asyncio.wait_for(store.retried.reach(4), PROMPT_S)  # put off for a minute of the frozen clock
        runner.registered.add("late::fn")
        consumer.functions_changed(runner.registered.__contains__)
        await asyncio.wait_for(runner.ran.reach(1), PROMPT_S)  # remembered, so it runs now: the three left room
    finally:
        await consumer.stop()


def test_a_registration_asks_once_per_missing_function_not_once_per_queue() -> None:
    missing, queues, registrations = MissingFunctions(), 50, 10
    for n in range(queues):
        with pytest.raises(JobNotReady):
            missing.check(f"q{n}", "late::fn", QueueSettings(), now=0)
    asked: list[str] = []

    def unrelated(function_id: str) -> bool:
        asked.append(function_id)
        return False

    for _ in range(registrations):
        missing.registered(unrelated)
    assert asked == ["late::fn"] * registrations
    missing.registered(lambda function_id: True)  # registered: every queue's wait for it is forgotten
    with pytest.raises(JobNotReady):  # a fresh wait, not one that began at 0 and is past its 50 ms of grace
        missing.check("q7", "late::fn", QueueSettings(missing_function_grace_ms=50), now=60)


async def test_a_pair_pushed_out_of_the_record_is_not_looked_at_again() -> None:
    missing = MissingFunctions(limit=2)  # past it, a notice is summed up on a timer: hence the loop
    try:
        for queue, function_id in (("a", "f1"), ("b", "f2"), ("c", "f3")):  # ("a", "f1") is pushed out
            with pytest.raises(JobNotReady):
                missing.check(queue, function_id, QueueSettings(missing_function_grace_ms=50), now=0)
        asked: list[str] = []
        missing.registered(lambda function_id: asked.append(function_id) is None and function_id == "f1")
        assert sorted(asked) == ["f2", "f3"]
        with pytest.raises(FunctionNotRegistered):  # still remembered from 0, so past its grace at 60
            missing.check("b", "f2", QueueSettings(missing_function_grace_ms=50), now=60)
    finally:
        missing.close()
