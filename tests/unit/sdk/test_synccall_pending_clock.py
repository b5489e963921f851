"""PendingCalls keeps one timer per distinct timeout (not a ``call_later`` per call) and still ends every call that
outlives its timeout, no earlier than its own deadline, in deadline order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.pending_calls import PendingCalls


class _CountingLoop:
    """Counts the timers scheduled on the running loop (its public call_at / call_later)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self.timers = 0
        call_at, call_later = loop.call_at, loop.call_later

        def counted_at(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.timers += 1
            return call_at(*args, **kwargs)

        def counted_later(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.timers += 1
            return call_later(*args, **kwargs)

        monkeypatch.setattr(loop, "call_at", counted_at)
        monkeypatch.setattr(loop, "call_later", counted_later)


async def test_one_timer_for_many_calls_with_the_same_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    counter = _CountingLoop(loop, monkeypatch)
    calls = PendingCalls(loop)
    futures = [calls.add(f"i{n}", "f", timeout_ms=30_000, on_expire=lambda _iid: None) for n in range(1000)]
    for n in range(1000):
        calls.succeed(f"i{n}", n)
    assert [await f for f in futures] == list(range(1000))
    assert counter.timers == 1  # before: 1000 (one call_later per call, each cancelled on success)
    assert len(calls) == 0


async def test_calls_expire_at_their_own_deadlines_in_order() -> None:
    loop = asyncio.get_running_loop()
    calls = PendingCalls(loop)
    expired: list[tuple[str, float]] = []

    def on_expire(invocation_id: str) -> None:
        expired.append((invocation_id, loop.time()))

    started: dict[str, float] = {}

    def add(invocation_id: str, timeout_ms: float) -> asyncio.Future[Any]:
        started[invocation_id] = loop.time()
        return calls.add(invocation_id, f"fn-{invocation_id}", timeout_ms=timeout_ms, on_expire=on_expire)

    slow_a = add("a", 60)
    answered = add("b", 60)  # settled before its deadline: never expires
    fast = add("c", 20)  # a shorter timeout added later expires first (its own clock)
    calls.succeed("b", "ok")
    await asyncio.sleep(0.03)
    slow_d = add("d", 60)  # added after the clock's first timer was armed: the timer is re-armed for it
    for future, name, timeout in ((fast, "c", 20), (slow_a, "a", 60), (slow_d, "d", 60)):
        with pytest.raises(TimeoutError, match=rf"^Invocation of 'fn-{name}' timed out after {timeout}ms$"):
            await future
    assert await answered == "ok"
    assert [name for name, _ in expired] == ["c", "a", "d"]
    for name, at in expired:  # never early: each at or after its own deadline
        seconds = 0.02 if name == "c" else 0.06
        assert at >= started[name] + seconds - 1e-6
    assert len(calls) == 0


async def test_a_late_answer_after_expiry_is_ignored_and_clocks_restart() -> None:
    loop = asyncio.get_running_loop()
    calls = PendingCalls(loop)
    forgotten: list[str] = []
    future = calls.add("x", "f", timeout_ms=10, on_expire=forgotten.append)
    with pytest.raises(TimeoutError):
        await future
    calls.succeed("x", "late")  # no-op
    assert forgotten == ["x"]
    again = calls.add("y", "f", timeout_ms=10, on_expire=forgotten.append)  # the clock of 10 ms starts over
    with pytest.raises(TimeoutError):
        await again
    assert forgotten == ["x", "y"]
