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
