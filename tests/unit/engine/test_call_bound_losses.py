"""Losses at the engine's call bounds: reported as degraded for a while, and logged once.

Before: ``FiredCalls`` had no notion of recent losses (``engine::health::check`` said healthy while calls were
skipped), and a pub/sub message from Redis refused with ``fire_limit`` was logged twice, by ``FiredCalls`` and
again by the Redis bus.
"""

from __future__ import annotations

import logging

import pytest

from iii_engine import limits
from iii_engine.limits import FIRE_LIMIT, FiredCalls, WorkerCalls
from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub.bus import RedisBus
from iii_engine.workers import WorkerConnection

pytestmark = pytest.mark.timeout(10)


async def test_fired_calls_are_degraded_while_losses_are_recent(monkeypatch: pytest.MonkeyPatch) -> None:
    fired = FiredCalls(1, 5000)
    assert not fired.degraded()
    assert fired.try_take()
    fired.skip("cron tick")
    assert fired.degraded()
    monkeypatch.setattr(limits, "DEGRADED_WINDOW_S", 0.0)  # the window is over
    assert not fired.degraded()
    fired.close()


async def test_worker_calls_count_refusals_and_are_degraded_while_they_are_recent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = WorkerCalls(2)
    worker = WorkerConnection.__new__(WorkerConnection)  # only its id and count are read
    worker.id, worker.calls = "w1", 2
    assert not calls.degraded()
    assert calls.refuse(worker, "f", answered=True) == ("worker w1 has 2 calls of worker functions in flight "
                                                        "(max_calls_per_worker 2)")
    calls.refuse(worker, "f", answered=False)
    assert (calls.refused, calls.refused_void) == (1, 1)
    assert calls.stats([worker]) == {"max_calls_per_worker": 2, "in_flight": 2, "busiest_worker": 2, "refused": 1,
                                     "refused_void": 1, "max_call_bytes_per_worker": 64 * 1024 * 1024,
                                     "bytes_in_flight": 0, "busiest_worker_bytes": 0}
    assert calls.degraded()
    monkeypatch.setattr(limits, "DEGRADED_WINDOW_S", 0.0)
    assert not calls.degraded()
    calls.close()


async def test_a_redis_message_refused_with_fire_limit_is_counted_by_the_bus_but_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = RedisBus("redis://127.0.0.1:6379/0")  # never connects: only its accounting is used
    try:
        with caplog.at_level(logging.WARNING, logger="iii_engine.modules.pubsub.bus"):
            bus._not_delivered("t", EngineError(FIRE_LIMIT, "publish to topic 't': none of its 1 subscribers"))
            assert bus.undelivered == 1
            assert not [r for r in caplog.records if r.name == "iii_engine.modules.pubsub.bus"]
            bus._not_delivered("t", RuntimeError("store down"))  # anything else is still the bus's to log
        assert bus.undelivered == 2
        warnings = [r.getMessage() for r in caplog.records if r.name == "iii_engine.modules.pubsub.bus"]
        assert warnings == ["1 pubsub messages from Redis not delivered (2 in all); latest on topic 't': store down"]
    finally:
        await bus._redis.aclose()


async def test_a_burst_of_refusals_of_two_kinds_ends_in_one_warning_with_both_counts(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = WorkerCalls(1)
    worker = WorkerConnection.__new__(WorkerConnection)
    worker.id, worker.calls = "w1", 1
    with caplog.at_level(logging.WARNING, logger="iii_engine.limits"):
        calls.refuse(worker, "f", answered=True)  # the first loss is logged at once
        for _ in range(3):
            calls.refuse(worker, "f", answered=False)
        calls.refuse(worker, "g", answered=True)
        calls.close()  # the end of the burst: its counts are logged now, not at the interval's end
    warnings = [r.getMessage() for r in caplog.records if r.name == "iii_engine.limits"]
    assert len(warnings) == 2
    assert "1 answered with too_many_calls, 0 void" in warnings[0]
    assert "1 answered with too_many_calls, 3 void" in warnings[1] and "2 and 3 in all" in warnings[1]
