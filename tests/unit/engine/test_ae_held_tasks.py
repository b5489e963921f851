"""limits.HeldTasks: what a task cancelled before it ever ran holds is given back once, by close(); what a task
that ran holds is given back by the task itself, never twice."""

from __future__ import annotations

import asyncio

from iii_engine.limits import CallCharge, FiredCalls, FiredHold, HeldTasks
from iii_engine.workers import Outbox, WorkerConnection


async def _send(text: str) -> None:
    return None


async def _holding(hold: FiredHold, started: asyncio.Event, gate: asyncio.Event) -> None:
    try:
        started.set()
        await gate.wait()
    finally:
        hold.release()


def _take(fired: FiredCalls, n: int = 1) -> FiredHold:
    hold = fired.try_take(n)
    assert hold is not None
    return hold


async def test_close_gives_back_what_tasks_that_never_ran_hold_each_kind() -> None:
    fired = FiredCalls(10)
    worker = WorkerConnection(outbox=Outbox(_send))
    tasks = HeldTasks()
    gate = asyncio.Event()
    one, three = _take(fired), _take(fired, 3)
    worker.calls, worker.call_bytes = 1, 200
    tasks.spawn(_holding(one, asyncio.Event(), gate), one)
    tasks.spawn(_holding(three, asyncio.Event(), gate), three)
    tasks.spawn(gate.wait(), CallCharge(worker, 200))
    tasks.spawn(gate.wait(), None)
    await tasks.close()
    assert (fired.in_flight, worker.calls, worker.call_bytes, len(tasks)) == (0, 0, 0, 0)


async def test_a_task_that_ran_gives_back_itself_and_close_does_not_again() -> None:
    fired = FiredCalls(10)
    tasks = HeldTasks()
    started, gate = asyncio.Event(), asyncio.Event()
    two = _take(fired, 2)
    tasks.spawn(_holding(two, started, gate), two)
    await started.wait()
    await tasks.close()
    assert fired.in_flight == 0  # not -2


async def test_a_task_that_leaves_the_map_itself_is_given_back_once() -> None:
    # the engine's call path: the task deletes its own entry in its ``finally`` (no done callback)
    fired = FiredCalls(10)
    tasks = HeldTasks()

    async def call() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            tasks.leave(asyncio.current_task())  # type: ignore[arg-type]

    for _ in range(2):
        tasks[asyncio.get_running_loop().create_task(call())] = _take(fired)
    await asyncio.sleep(0)  # both run to their first await
    tasks[asyncio.get_running_loop().create_task(call())] = _take(fired)  # cancelled before it ever runs
    await tasks.close()
    assert (fired.in_flight, len(tasks)) == (0, 0)


async def test_a_task_added_while_closing_is_closed_too() -> None:
    fired = FiredCalls(10)
    tasks = HeldTasks()
    gate = asyncio.Event()

    late: list[asyncio.Task[object]] = []

    async def spawns_another() -> None:
        try:
            await gate.wait()
        finally:
            hold = _take(fired)
            late.append(tasks.spawn(_holding(hold, asyncio.Event(), gate), hold))

    tasks.spawn(spawns_another(), None)
    await asyncio.sleep(0)
    await tasks.close()
    assert late[0].cancelled()  # not left running
    assert (fired.in_flight, len(tasks)) == (0, 0)
