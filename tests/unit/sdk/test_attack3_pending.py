"""Attacks on PendingCalls' one timer per distinct timeout (d4e98a1)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.pending_calls import PendingCalls


def _armed_timers(loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> list[asyncio.TimerHandle]:
    """The timers the code under test schedules on ``loop`` (through its public call_at / call_later)."""
    handles: list[asyncio.TimerHandle] = []
    call_at, call_later = loop.call_at, loop.call_later

    def at(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        handles.append(call_at(*args, **kwargs))
        return handles[-1]

    def later(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        handles.append(call_later(*args, **kwargs))
        return handles[-1]

    monkeypatch.setattr(loop, "call_at", at)
    monkeypatch.setattr(loop, "call_later", later)
    return handles


async def test_finished_calls_with_distinct_timeouts_leave_no_timers_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers passing each a timeout of their own (a remaining budget, say) must not leave a timer and a clock
    armed per finished call until its deadline: at 10,000 calls/s and 30 s that is 300,000 of each (before:
    2,000 of these 2,000 finished calls still armed)."""
    loop = asyncio.get_running_loop()
    handles = _armed_timers(loop, monkeypatch)
    calls = PendingCalls(loop)
    for n in range(2000):
        future = calls.add(f"i{n}", "f", timeout_ms=30_000 + n / 7, on_expire=lambda _iid: None)
        calls.succeed(f"i{n}", n)
        assert await future == n
    armed = [h for h in handles if not h.cancelled() and h.when() > loop.time()]
    assert len(armed) <= 64, f"{len(armed)} timers armed for no call in flight"


async def test_calls_still_expire_after_idle_clocks_were_dropped() -> None:
    loop = asyncio.get_running_loop()
    calls = PendingCalls(loop)
    for n in range(200):  # many clocks emptied and dropped
        calls.add(f"i{n}", "f", timeout_ms=30_000 + n, on_expire=lambda _iid: None)
        calls.succeed(f"i{n}", None)
    expired: list[str] = []
    late = [calls.add(f"t{n}", "f", timeout_ms=30_000 + n, on_expire=expired.append) for n in range(200)]
    soon = calls.add("soon", "f", timeout_ms=1, on_expire=expired.append)
    with pytest.raises(TimeoutError):
        await soon
    assert expired == ["soon"] and len(calls) == 200
    for n in range(200):
        calls.succeed(f"t{n}", n)
    assert [await f for f in late] == list(range(200))


async def test_a_call_replacing_the_only_call_of_its_timeout_still_expires() -> None:
    """The same id again, alone on its timeout, among many timeouts: its clock must not be dropped under it."""
    loop = asyncio.get_running_loop()
    calls = PendingCalls(loop)
    others = [calls.add(f"o{n}", "f", timeout_ms=60_000 + n, on_expire=lambda _iid: None) for n in range(20)]
    calls.add("x", "f", timeout_ms=5, on_expire=lambda _iid: None)
    again = calls.add("x", "f", timeout_ms=5, on_expire=lambda _iid: None)
    done, _ = await asyncio.wait({again}, timeout=10)  # bounds the test; the call's own timeout is 5 ms
    assert again in done, "the replacing call never expired"
    with pytest.raises(TimeoutError, match="timed out after 5ms"):
        again.result()
    for n in range(20):
        calls.succeed(f"o{n}", n)
    assert [await f for f in others] == list(range(20))
