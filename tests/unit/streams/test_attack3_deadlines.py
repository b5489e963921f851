"""Attacks on SharedDeadlines' per-loop lanes (1bfadef): loops taking turns, loop churn."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from iii_streams.deadlines import SharedDeadlines


async def _operation(deadlines: SharedDeadlines) -> None:
    entry = deadlines.enter()
    assert entry is not None
    await asyncio.sleep(0)
    assert deadlines.leave(entry, False) is False


def _count_timers(loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> list[asyncio.TimerHandle]:
    handles: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def at(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        handles.append(call_at(*args, **kwargs))
        return handles[-1]

    monkeypatch.setattr(loop, "call_at", at)
    return handles


def test_two_loops_taking_turns_keep_one_timer_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store used from two loops in turn (two threads' loops, or a sync wrapper's) must not arm a new timer on
    each switch, each left armed for the whole limit (before: 100 timers on each loop for 100 turns)."""
    deadlines = SharedDeadlines(30.0)
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    try:
        timers = [_count_timers(loop, monkeypatch) for loop in loops]
        for _ in range(100):
            for loop in loops:
                loop.run_until_complete(_operation(deadlines))
        assert [len(t) for t in timers] == [1, 1]
    finally:
        for loop in loops:
            loop.close()


def test_closed_loops_do_not_keep_their_lanes() -> None:
    """Loop churn (a new loop per asyncio.run): lanes of closed loops, and the loops, are let go."""
    deadlines = SharedDeadlines(30.0)
    refs: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    for _ in range(50):
        loop = asyncio.new_event_loop()
        refs.append(weakref.ref(loop))
        loop.run_until_complete(_operation(deadlines))
        loop.close()
        del loop
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive <= 9, f"{alive} closed loops still referenced"


def test_an_operation_still_expires_on_a_loop_that_took_turns() -> None:
    deadlines = SharedDeadlines(0.05)
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]

    async def slow() -> bool:
        entry = deadlines.enter()
        assert entry is not None
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return deadlines.leave(entry, True)
        return deadlines.leave(entry, False)

    try:
        for _ in range(3):
            for loop in loops:
                loop.run_until_complete(_operation(deadlines))
        assert loops[0].run_until_complete(slow()) is True
        assert loops[1].run_until_complete(slow()) is True
    finally:
        for loop in loops:
            loop.close()
