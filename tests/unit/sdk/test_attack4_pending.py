"""Attacks on PendingCalls' clocks (d4e98a1, c8a2948, 2eec3e3): expiry callbacks that add or remove calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.pending_calls import PendingCalls


def _loop_errors(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    return errors


async def test_an_expiry_callback_adding_a_call_of_the_same_timeout_arms_one_timer() -> None:
    """A retry started from ``on_expire`` joins the clock whose timer is firing: before, the join armed a timer
    and the firing tick armed another for the same call; the second one later ran a tick for a clock already
    gone (KeyError in the loop's exception handler)."""
    loop = asyncio.get_running_loop()
    errors = _loop_errors(loop)
    calls = PendingCalls(loop)
    expired: list[str] = []
    retry: list[asyncio.Future[Any]] = []

    def again(iid: str) -> None:
        expired.append(iid)
        retry.append(calls.add(iid + "-again", "f", timeout_ms=5, on_expire=expired.append))

    first = calls.add("a", "f", timeout_ms=5, on_expire=again)
    with pytest.raises(TimeoutError):
        await first
    with pytest.raises(TimeoutError):
        await retry[0]
    # Both timers of the retry (if there were two) were due in the turn that expired it; a turn more runs any
    # callback they left.
    await asyncio.sleep(0)
    assert expired == ["a", "a-again"]
    assert errors == []
    assert len(calls) == 0 and not calls._clocks


async def test_an_expiry_callback_finishing_calls_of_its_clock_with_many_clocks() -> None:
    """``on_expire`` ending every other call of its own clock while more than 16 clocks exist: the clock is
    dropped under the tick; the tick must neither fail nor re-arm a dropped clock, and later calls expire."""
    loop = asyncio.get_running_loop()
    errors = _loop_errors(loop)
    calls = PendingCalls(loop)
    parked = [calls.add(f"p{n}", "f", timeout_ms=60_000 + n, on_expire=lambda _iid: None) for n in range(20)]
    others = [f"o{n}" for n in range(5)]

    def finish_the_rest(_iid: str) -> None:
        for iid in others:
            calls.succeed(iid, iid)

    first = calls.add("first", "f", timeout_ms=5, on_expire=finish_the_rest)
    rest = [calls.add(iid, "f", timeout_ms=5, on_expire=lambda _iid: None) for iid in others]
    with pytest.raises(TimeoutError):
        await first
    assert [await f for f in rest] == others
    late = calls.add("late", "f", timeout_ms=5, on_expire=lambda _iid: None)
    with pytest.raises(TimeoutError):
        await late
    await asyncio.sleep(0)
    assert errors == []
    assert len(calls) == 20 and 5 not in calls._clocks
    for n, future in enumerate(parked):
        calls.succeed(f"p{n}", n)
        assert await future == n


async def test_an_expiry_callback_adding_then_ending_a_call_leaves_no_timer() -> None:
    """``on_expire`` starts a call of its own clock and ends it at once (a caller cancelled): the clock ends with
    the tick; before, the timer the short-lived call armed stayed behind and later ticked a clock that was gone."""
    loop = asyncio.get_running_loop()
    errors = _loop_errors(loop)
    calls = PendingCalls(loop)

    def add_and_end(iid: str) -> None:
        calls.add(iid + "-brief", "f", timeout_ms=5, on_expire=lambda _iid: None)
        calls.discard(iid + "-brief")

    with pytest.raises(TimeoutError):
        await calls.add("a", "f", timeout_ms=5, on_expire=add_and_end)
    # The brief call's timer (if it stayed armed) is due 5 ms later: a call of the same timeout started now
    # expires after it, on the clock it would have ticked.
    with pytest.raises(TimeoutError):
        await calls.add("b", "f", timeout_ms=5, on_expire=lambda _iid: None)
    await asyncio.sleep(0)
    assert errors == []
    assert len(calls) == 0 and not calls._clocks
