"""iii_engine.limits: trigger-fired calls bounded in bytes (max_fired_bytes) as well as in count, and charged to the
share (max_call_bytes_per_worker) of the worker whose call set them off (limits.CallCharge).

Before, only counts bounded them: 10,000 fired calls of 4 MiB frames may hold 40 GB.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from iii_engine.config import ConfigError, config_from_mapping
from iii_engine.limits import CALL_CHARGE, CallCharge, FiredCalls, HeldTasks, WorkerCalls
from iii_engine.modules.base import EngineError
from iii_engine.workers import Outbox, WorkerConnection

pytestmark = pytest.mark.timeout(10)


async def _send(text: str) -> None:
    return None


def _worker() -> WorkerConnection:
    return WorkerConnection(outbox=Outbox(_send), id="w1")


def _in(charge: CallCharge | None) -> contextvars.Context:
    """A context as a worker's built-in call runs in (the engine sets CALL_CHARGE in its task)."""
    context = contextvars.copy_context()
    context.run(CALL_CHARGE.set, charge)
    return context


async def test_a_fired_call_holds_its_producers_frame_size_here_and_on_the_workers_share() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=1000)
    worker = _worker()
    inside = _in(CallCharge(worker, 300))
    publish = inside.run(fired.try_take, 2)  # a publish to two subscribers: 600 bytes
    assert publish is not None
    assert (fired.bytes_in_flight, worker.call_bytes) == (600, 600)
    assert inside.run(fired.try_take, 2) is None  # 1,200 > 1,000: the count has room, the bytes do not
    own = fired.try_take(5)  # the engine's own producers (cron, worker events) hold no bytes
    assert own is not None and own.charge is None
    assert (fired.in_flight, fired.bytes_in_flight) == (7, 600)
    publish.release(1)  # from this context: the hold knows what its take charged
    assert (fired.bytes_in_flight, worker.call_bytes) == (300, 300)
    publish.one().release()
    own.release()
    assert (fired.in_flight, fired.bytes_in_flight, worker.call_bytes) == (0, 0, 0)
    assert fired.stats()["max_fired_bytes"] == 1000


async def test_a_producer_waits_for_bytes_and_fails_with_fire_limit_naming_max_fired_bytes() -> None:
    fired = FiredCalls(100, 100, max_fired_bytes=1000)
    worker = _worker()
    inside = _in(CallCharge(worker, 600))
    assert inside.run(fired.try_take)
    waiter = asyncio.get_running_loop().create_task(
        fired.take(1, "publish to topic 't'", "subscribers"), context=_in(CallCharge(worker, 600)))
    with pytest.raises(EngineError) as failed:
        await waiter
    assert failed.value.code == "fire_limit"
    assert failed.value.message == (
        "publish to topic 't': none of its 1 subscribers reached: no room within 100 ms (fire_wait_timeout_ms): "
        "1 trigger-fired calls in flight (max_fired_calls 100) holding 600 bytes (max_fired_bytes 1000)")
    assert (fired.refused, fired.bytes_in_flight, worker.call_bytes) == (1, 600, 600)


async def test_a_waiter_gets_in_once_bytes_are_given_back_and_holds_them_in_its_own_context() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=1000)
    first, second = _worker(), _worker()
    holding = _in(CallCharge(first, 800))
    held = holding.run(fired.try_take)
    assert held is not None
    waiter = asyncio.get_running_loop().create_task(fired.take(1, "publish", "subscribers"),
                                                    context=_in(CallCharge(second, 500)))
    await asyncio.sleep(0)
    assert not waiter.done() and fired.waiting == 1
    held.release()
    hold = await waiter
    assert (fired.bytes_in_flight, first.call_bytes, second.call_bytes) == (500, 0, 500)
    assert (hold.n, hold.charge and hold.charge.worker) == (1, second)
    hold.release()
    assert (fired.bytes_in_flight, second.call_bytes) == (0, 0)


async def test_producers_waiting_for_more_than_the_budget_are_refused_at_once() -> None:
    # a waiting producer holds its payload too (its call): waiters are bounded in bytes as in count
    fired = FiredCalls(100, 5000, max_fired_bytes=1000)
    worker = _worker()
    assert _in(CallCharge(worker, 900)).run(fired.try_take)
    loop = asyncio.get_running_loop()
    first = loop.create_task(fired.take(1, "publish a", "subscribers"), context=_in(CallCharge(worker, 600)))
    await asyncio.sleep(0)
    assert fired.waiting == 1
    with pytest.raises(EngineError) as failed:
        await loop.create_task(fired.take(1, "publish b", "subscribers"), context=_in(CallCharge(worker, 600)))
    assert failed.value.message == (
        "publish b: none of its 1 subscribers reached: 1 trigger-fired calls in flight (max_fired_calls 100) "
        "holding 900 bytes (max_fired_bytes 1000) and 1 producers already waiting for room for 600 bytes "
        "(max_fired_bytes 1000)")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (fired.waiting, fired.refused) == (0, 1)
    # the queue is empty again: a small waiter is let in behind nobody
    small = loop.create_task(fired.take(1, "publish c", "subscribers"), context=_in(CallCharge(worker, 50)))
    await asyncio.sleep(0)
    assert small.done() and fired.bytes_in_flight == 950


async def test_a_fan_out_bigger_than_the_budget_gets_in_alone() -> None:
    fired = FiredCalls(100, 5000, max_fired_bytes=1000)
    worker = _worker()
    big = _in(CallCharge(worker, 400))
    hold = big.run(fired.try_take, 3)  # 1,200 bytes: nothing else is held, so rather than never
    assert hold is not None
    assert big.run(fired.try_take, 1) is None
    hold.release()
    assert fired.bytes_in_flight == 0


async def test_slots_given_back_by_a_stop_give_back_their_bytes_too() -> None:
    # a stop's HeldTasks.close gives back the slots of tasks that never ran, outside their producer's context
    fired = FiredCalls(100, 5000, max_fired_bytes=1000)
    tasks = HeldTasks()
    worker = _worker()
    inside = _in(CallCharge(worker, 300))
    hold = inside.run(fired.try_take)
    assert hold is not None
    tasks.spawn(asyncio.Event().wait(), hold)  # spawned holding what the take returned, as a trigger set does
    await tasks.close()
    assert (fired.in_flight, fired.bytes_in_flight, worker.call_bytes) == (0, 0, 0)


async def test_a_worker_holding_its_byte_share_is_refused_naming_it() -> None:
    calls = WorkerCalls(10, 1000)
    worker = _worker()
    worker.calls, worker.call_bytes = 1, 1200
    assert calls.refuse(worker, "publish", answered=False) == (
        "worker w1 holds 1200 bytes in calls in flight and the trigger-fired calls they set off "
        "(max_call_bytes_per_worker 1000)")
    assert (calls.refused, calls.refused_void) == (0, 1)
    assert calls.stats([worker])["busiest_worker_bytes"] == 1200
    calls.close()


@pytest.mark.parametrize(("key", "message"), [
    ("max_fired_bytes", "max_fired_bytes: must be >= 1, got 0"),
    ("max_call_bytes_per_worker", "max_call_bytes_per_worker: must be >= 1, got 0"),
])
def test_the_byte_budgets_are_configured_like_the_counts(key: str, message: str) -> None:
    assert getattr(config_from_mapping({key: 5000}), key) == 5000
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({key: 0})
