"""iii_engine.limits.FiredCalls: the engine-wide bound on trigger-fired calls (max_fired_calls).

Before it, every trigger-fired call was a task with no count bound; these pin the admission rules: all slots of a
fan-out at once, FIFO turns, a deadline on the wait, a bound on the waiters, and counted, rate-limited skips.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii_engine import limits
from iii_engine.config import ConfigError, config_from_mapping
from iii_engine.limits import FiredCalls
from iii_engine.modules.base import EngineError

pytestmark = pytest.mark.timeout(10)


async def test_take_waits_its_turn_and_gets_every_slot_at_once() -> None:
    fired = FiredCalls(3, 5000)
    assert fired.try_take(2)
    big = asyncio.create_task(fired.take(3, "publish to topic 'a'", "subscribers"))
    await asyncio.sleep(0)
    small = asyncio.create_task(fired.take(1, "publish to topic 'b'", "subscribers"))
    await asyncio.sleep(0)
    # one slot is free, but the head waits for three: nobody overtakes it (and try_take defers to it too)
    assert not big.done() and not small.done() and fired.waiting == 4
    assert not fired.try_take()
    fired.release(1)
    assert not big.done()
    fired.release(1)
    await big
    assert fired.in_flight == 3 and not small.done()
    fired.release(3)
    await small
    assert (fired.in_flight, fired.peak, fired.waiting) == (1, 3, 0)


async def test_a_wait_that_runs_out_fails_with_fire_limit_and_takes_nothing() -> None:
    fired = FiredCalls(1, 50)
    assert fired.try_take()
    with pytest.raises(EngineError) as failed:
        await fired.take(1, "publish to topic 'news'", "subscribers")
    assert failed.value.code == "fire_limit"
    assert failed.value.message == (
        "publish to topic 'news': none of its 1 subscribers reached: no room within 50 ms (fire_wait_timeout_ms): "
        "1 trigger-fired calls in flight (max_fired_calls 1)")
    assert (fired.in_flight, fired.waiting, fired.refused) == (1, 0, 1)
    fired.release()
    assert fired.try_take()  # the waiter that gave up left the queue


async def test_more_than_the_limit_at_once_or_too_many_waiting_fail_at_once() -> None:
    fired = FiredCalls(2, 5000)
    with pytest.raises(EngineError, match="none of its 3 subscribers reached: more than max_fired_calls 2"):
        await fired.take(3, "publish to topic 't'", "subscribers")
    assert fired.try_take(2)
    waiters = [asyncio.create_task(fired.take(1, "first")), asyncio.create_task(fired.take(2, "second"))]
    await asyncio.sleep(0)
    with pytest.raises(EngineError, match=r"and 2 producers already waiting for room$"):
        await fired.take(1, "third", "calls")
    assert fired.refused == 4
    fired.release(2)
    await waiters[0]
    fired.release(1)
    await waiters[1]
    assert fired.in_flight == 2


async def test_a_cancelled_waiter_leaves_and_lets_the_next_in() -> None:
    fired = FiredCalls(2, 5000)
    assert fired.try_take(1)
    head = asyncio.create_task(fired.take(2, "head"))
    await asyncio.sleep(0)
    behind = asyncio.create_task(fired.take(1, "behind"))
    await asyncio.sleep(0)
    head.cancel()  # e.g. the engine stopping, or the producer's own deadline
    await asyncio.gather(head, return_exceptions=True)
    await behind
    assert (fired.in_flight, fired.waiting, fired.refused) == (2, 0, 0)


async def test_slots_granted_as_the_wait_is_cancelled_are_given_back() -> None:
    fired = FiredCalls(1, 5000)
    assert fired.try_take()
    waiter = asyncio.create_task(fired.take(1, "w"))
    await asyncio.sleep(0)
    fired.release()  # granted: the waiter's task is woken ...
    waiter.cancel()  # ... and cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    assert fired.in_flight == 0


async def test_skips_and_refusals_are_counted_and_warned_about_at_most_once_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SKIP_LOG_INTERVAL_S", 0.05)
    fired = FiredCalls(1, 5000)
    assert fired.try_take()
    seen: list[str] = []
    second = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            if len(seen) == 2:
                second.set()

    logger = logging.getLogger("iii_engine.limits")
    handler = Seen(logging.WARNING)
    logger.addHandler(handler)
    try:
        for _ in range(5):
            fired.skip("cron job tick")
        assert fired.skipped == 5
        assert seen == ["trigger-fired calls not made, no room under max_fired_calls 1: 1 skipped (nobody to wait), "
                        "0 refused (their producer failed with fire_limit) since the last warning; 1 skipped, "
                        "0 refused in all, 1 in flight; latest: cron job tick"]
        with pytest.raises(EngineError):
            await fired.take(2, "publish to topic 'x'", "subscribers")
        # the other four and the refusal are logged when the interval is over, though nothing is lost then
        await asyncio.wait_for(second.wait(), 5)
    finally:
        logger.removeHandler(handler)
    assert seen[1] == ("trigger-fired calls not made, no room under max_fired_calls 1: 4 skipped (nobody to wait), "
                       "2 refused (their producer failed with fire_limit) since the last warning; 5 skipped, "
                       "2 refused in all, 1 in flight")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_fired_calls", 0, "max_fired_calls: must be >= 1, got 0"),
    ("max_fired_calls", "many", "max_fired_calls: must be an integer, got 'many'"),
    ("fire_wait_timeout_ms", 0, "fire_wait_timeout_ms: must be >= 1, got 0"),
])
def test_bad_settings_are_refused_naming_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        config_from_mapping({key: value})


def test_defaults() -> None:
    config = config_from_mapping({})
    assert (config.max_fired_calls, config.fire_wait_timeout_ms) == (10_000, 10_000)
