"""FiredCalls: the share of trigger-fired calls one callee worker may have in flight (max_fired_calls_per_worker),
and the naming of the callee holding the most of max_fired_calls in its refusals and warnings.

Before, max_fired_calls was one engine-wide bound: one worker that never answered its deliveries held all of it, and
the fire_limit errors and warnings named the bound, never that worker or its function.
"""

from __future__ import annotations

import logging

import pytest

from iii_engine.config import ConfigError, config_from_mapping
from iii_engine.limits import CalleeCall, FiredCalls, FiredHold
from iii_engine.modules.base import EngineError

pytestmark = pytest.mark.timeout(10)


def test_the_share_is_a_quarter_of_max_fired_calls_unless_set() -> None:
    assert FiredCalls(10_000).callee_limit == 2_500
    assert FiredCalls(3).callee_limit == 1  # never 0
    assert FiredCalls(100, max_fired_calls_per_worker=7).callee_limit == 7
    assert FiredCalls(5, max_fired_calls_per_worker=7).callee_limit == 5  # never more than the whole
    assert config_from_mapping({"max_fired_calls_per_worker": 7}).max_fired_calls_per_worker == 7
    assert config_from_mapping({}).max_fired_calls_per_worker is None
    with pytest.raises(ConfigError, match="max_fired_calls_per_worker: must be >= 1"):
        config_from_mapping({"max_fired_calls_per_worker": 0})


def slot(fired: FiredCalls) -> FiredHold:
    taken = fired.try_take()
    assert taken is not None
    return taken


def call_to(fired: FiredCalls, worker_id: str, function_id: str) -> CalleeCall:
    call = fired.to_callee(slot(fired), worker_id, function_id)
    assert call is not None
    return call


async def test_a_callee_at_its_share_gets_no_more_and_the_others_still_do() -> None:
    fired = FiredCalls(10, max_fired_calls_per_worker=2)
    first = call_to(fired, "hung", "hung::sub")
    call_to(fired, "hung", "hung::sub")
    assert fired.to_callee(slot(fired), "hung", "hung::sub") is None
    assert fired.in_flight == 2  # its slot went back
    other = call_to(fired, "good", "good::sub")
    assert (fired.skipped, fired.skipped_callee_share, fired.stats()["busiest_callee"]) == (1, 1, 2)
    other.release()
    first.release()
    call_to(fired, "hung", "hung::sub")  # a place in its share came back
    assert fired.in_flight == 2


async def test_refusals_and_warnings_at_max_fired_calls_name_the_busiest_callee(
        caplog: pytest.LogCaptureFixture) -> None:
    fired = FiredCalls(4, 50, max_fired_calls_per_worker=4)
    for worker_id, function_id in [("w1", "slow::f"), ("w1", "slow::f"), ("w1", "slow::g"), ("w2", "fast::f")]:
        call_to(fired, worker_id, function_id)
    busiest = ("4 trigger-fired calls in flight (max_fired_calls 4), 3 of them to worker w1 "
               "(max_fired_calls_per_worker 4), 2 to slow::f")
    with caplog.at_level(logging.WARNING, logger="iii_engine.limits"):
        with pytest.raises(EngineError) as failed:
            await fired.take(1, "publish to topic 'news'", "subscribers")
        assert failed.value.code == "fire_limit"
        assert failed.value.message == (f"publish to topic 'news': none of its 1 subscribers reached: no room within "
                                        f"50 ms (fire_wait_timeout_ms): {busiest}")
        assert fired.try_take() is None
        fired.skip("cron c1 tick")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1  # the skip is counted for the next one (rate-limited)
    assert "4 in flight, 3 of them to worker w1 (max_fired_calls_per_worker 4), 2 to slow::f; latest:" in warnings[0]
    fired.close()
