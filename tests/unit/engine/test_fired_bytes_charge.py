"""iii_engine.limits: a fired call holds the bytes of the worker's call that set it off only while that call runs,
and gives back exactly what its take charged.

Before, FiredCalls read the charge from the context at take and again at release. A task started inside a worker's
built-in call outlives it with its context (the first ``enqueue`` on a topic makes the topic's consumer): every
later fan-out it set off charged that first caller, with that caller's frame size, so a worker with no call in
flight held 3,600,688 bytes of other workers' jobs and its own publish was refused. And a stop gave back the slots
of tasks that never ran with no bytes: the engine-wide count was reset to 0 when nothing was in flight, the
worker's never.
"""

from __future__ import annotations

import asyncio

import pytest

from iii_engine.limits import CALL_CHARGE, FiredCalls, FiredHold, HeldTasks
from iii_engine.workers import Outbox, WorkerConnection
from tests.charges import worker_call

pytestmark = pytest.mark.timeout(10)


async def _send(text: str) -> None:
    return None


def _worker(worker_id: str = "w1") -> WorkerConnection:
    return WorkerConnection(outbox=Outbox(_send), id=worker_id)


def _all_given_back(fired: FiredCalls, *workers: WorkerConnection) -> tuple[int, ...]:
    """Every counter a scenario moves; all 0 once everything it started is over."""
    return (fired.in_flight, fired.bytes_in_flight, fired.waiting,
            *(count for worker in workers for count in (worker.calls, worker.builtin_calls, worker.call_bytes)))


async def test_a_task_that_outlives_its_call_sets_off_fired_calls_holding_none_of_its_bytes() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=10_000, max_call_bytes_per_worker=1000)
    first = _worker()
    charge, inside = worker_call(first, 300)
    held: dict[str, int] = {}
    running = asyncio.Event()
    job = asyncio.Event()

    async def consumer() -> None:  # a queue topic's consumer, made by the first enqueue on the topic
        running.set()
        await job.wait()
        hold = fired.try_take(2)  # a later job's fan-out, long after the call that made this task
        assert hold is not None and hold.charge is None
        held["fired"], held["worker"] = fired.bytes_in_flight, first.call_bytes
        hold.release()

    task = inside.run(asyncio.get_running_loop().create_task, consumer())
    await running.wait()
    charge.give_back()  # the enqueue call is over
    job.set()
    await task
    assert held == {"fired": 0, "worker": 0}  # before: 600 bytes on the worker, which had no call in flight
    assert _all_given_back(fired, first) == (0,) * 6


async def test_release_gives_back_what_its_take_charged_whatever_the_context_says_by_then() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=10_000, max_call_bytes_per_worker=10_000)
    first, second = _worker("w1"), _worker("w2")
    charge, inside = worker_call(first, 300)
    released = asyncio.Event()
    order: list[str] = []

    async def delivery(name: str, slot: FiredHold) -> None:  # handed one slot by the fan-out that spawned it
        await released.wait()
        slot.release()
        order.append(name)

    def fan_out(name: str) -> list[asyncio.Task[None]]:
        hold = fired.try_take(2)
        assert hold is not None
        return [asyncio.get_running_loop().create_task(delivery(f"{name}{i}", hold.one())) for i in range(2)]

    charged = inside.run(fan_out, "live")  # while the call runs: 600 bytes on its worker
    assert (fired.bytes_in_flight, first.call_bytes) == (600, 900)
    charge.give_back()
    uncharged = inside.run(fan_out, "over")  # same context, the call over: no bytes
    assert (fired.bytes_in_flight, first.call_bytes) == (600, 600)
    # the context now names another call: the deliveries still give back what they were taken for
    inside.run(CALL_CHARGE.set, worker_call(second, 100)[0])
    released.set()
    await asyncio.gather(*charged, *uncharged)
    assert len(order) == 4
    second.calls, second.builtin_calls, second.call_bytes = 0, 0, second.call_bytes - 100  # its call is over
    assert _all_given_back(fired, first, second) == (0,) * 9


async def test_a_stop_gives_back_the_bytes_of_fired_calls_that_never_ran_to_the_engine_and_the_worker() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=10_000, max_call_bytes_per_worker=10_000)
    worker = _worker()
    charge, inside = worker_call(worker, 300)
    tasks = HeldTasks()
    gate = asyncio.Event()
    tick = fired.try_take()  # the engine's own (a cron tick): held to the end, so in_flight never reaches 0
    assert tick is not None

    def fan_out() -> FiredHold:
        three = fired.try_take(3)
        assert three is not None
        three.release(1)  # one of the three slots went back at once (a subscriber gone meanwhile)
        two = FiredHold(fired, 2, three.charge)  # the other two: a trigger set's handlers
        tasks.spawn(gate.wait(), two)
        one = fired.try_take(1)
        assert one is not None
        # the engine's call path (Invocations.fire): the task deletes its own entry, no done callback
        tasks[asyncio.get_running_loop().create_task(gate.wait())] = one
        return three

    inside.run(fan_out)
    charge.give_back()
    assert (fired.in_flight, fired.bytes_in_flight, worker.call_bytes) == (4, 900, 900)
    await tasks.close()  # neither task ever ran
    tick.release()
    # before: 900 bytes left on the worker and engine-wide (in_flight never 0, so never reset)
    assert _all_given_back(fired, worker) == (0,) * 6
