"""Attack on FiredCalls (max_fired_calls): waiters that leave in the same event-loop turn as their grant.

A task cancelled while it waits has its future cancelled at once, but runs its cleanup only on its next turn; a
release in between must neither fail nor hand the cancelled waiter slots that nobody will ever give back.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iii_engine.limits import FiredCalls
from iii_engine.modules.base import EngineError

pytestmark = pytest.mark.timeout(10)


async def test_a_release_in_the_turn_a_waiter_is_cancelled_skips_it_and_leaks_nothing() -> None:
    fired = FiredCalls(2, 5000)
    assert fired.try_take(2)
    gone = asyncio.create_task(fired.take(1, "publish to topic 'gone'", "subscribers"))
    await asyncio.sleep(0)
    next_one = asyncio.create_task(fired.take(1, "publish to topic 'next'", "subscribers"))
    await asyncio.sleep(0)
    assert fired.waiting == 2
    gone.cancel()  # its future is cancelled now; its own cleanup runs on its next turn
    fired.release()  # before that turn: the slot goes to the next waiter, not to the one that left
    with pytest.raises(asyncio.CancelledError):
        await gone
    await next_one
    assert (fired.in_flight, fired.waiting) == (2, 0)
    fired.release(2)
    assert (fired.in_flight, fired.waiting) == (0, 0)
    assert fired.try_take(2)


async def test_a_release_in_the_turn_a_waiters_deadline_fires_refuses_it_and_leaks_nothing() -> None:
    fired = FiredCalls(1, 20)
    assert fired.try_take()
    late = asyncio.create_task(fired.take(1, "publish to topic 'late'", "subscribers"))
    await asyncio.sleep(0)
    # due just after the waiter's deadline; the loop is held past both, so they run in one turn: the deadline
    # cancels the waiter (its cleanup comes on its next turn), then the slot comes back
    asyncio.get_running_loop().call_later(0.021, fired.release)
    time.sleep(0.05)  # noqa: ASYNC251  (holds the loop on purpose: both timers fall due in one turn)
    with pytest.raises(EngineError) as refused:
        await late
    assert refused.value.code == "fire_limit"
    assert (fired.in_flight, fired.waiting) == (0, 0)
    assert fired.try_take()


async def test_waiting_producers_share_one_deadline_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every waiter waits the same time, so deadlines come in queue order: one timer serves them all (before: an
    asyncio.timeout, so a timer armed and cancelled, per waiting producer; ~20 us a wait here)."""
    fired = FiredCalls(1000, 60_000)
    assert fired.try_take(1000)
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counted(when: float, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_at", counted)
    waiters = [asyncio.create_task(fired.take(1, f"publish {n}", "subscribers")) for n in range(1000)]
    await asyncio.sleep(0)
    assert fired.waiting == 1000
    assert len(armed) == 1
    fired.release(1000)
    await asyncio.gather(*waiters)
    assert (fired.in_flight, fired.waiting) == (1000, 0)


async def test_deadlines_still_end_each_wait_in_turn_with_one_timer() -> None:
    fired = FiredCalls(2, 100)
    assert fired.try_take(2)
    first = asyncio.create_task(fired.take(1, "publish first", "subscribers"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(fired.take(1, "publish second", "subscribers"))
    with pytest.raises(EngineError, match=r"publish first: .* no room within 100 ms"):
        await first
    assert not second.done() and fired.waiting == 1  # its own deadline is 50 ms later
    with pytest.raises(EngineError, match=r"publish second: .* no room within 100 ms"):
        await second
    assert (fired.in_flight, fired.waiting, fired.refused) == (2, 0, 2)
    fired.close()  # an engine stopped (and maybe started again on another loop) keeps no timer
    third = asyncio.create_task(fired.take(1, "publish third", "subscribers"))
    with pytest.raises(EngineError, match="publish third"):
        await asyncio.wait_for(third, 2)


async def test_a_head_cancelled_in_the_turn_of_its_deadline_lets_those_behind_it_in() -> None:
    fired = FiredCalls(2, 1000)  # a deadline far enough for a loaded machine to reach the cancel before it
    assert fired.try_take()
    loop = asyncio.get_running_loop()
    big = asyncio.create_task(fired.take(2, "publish big", "subscribers"))  # needs both slots: waits
    await asyncio.sleep(0)
    big_deadline = loop.time() + 1.0
    await asyncio.sleep(0.1)
    small = asyncio.create_task(fired.take(1, "publish small", "subscribers"))  # fits, but waits behind big
    await asyncio.sleep(0)
    assert fired.waiting == 3
    # big is cancelled just before its deadline, and the loop is held past it: the cancel and the deadline timer
    # run in one turn, before big's own cleanup
    loop.call_at(big_deadline - 0.01, big.cancel)
    time.sleep(max(0.0, big_deadline - loop.time()) + 0.02)  # noqa: ASYNC251  (holds the loop on purpose)
    with pytest.raises(asyncio.CancelledError):
        await big
    await small  # before: waited to its own deadline (100 ms later) and failed with fire_limit
    assert (fired.in_flight, fired.waiting) == (2, 0)
