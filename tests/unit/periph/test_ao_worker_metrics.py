"""EventLoopLagMonitor refuses an interval it cannot schedule by, naming it."""

from __future__ import annotations

import math

import pytest

from iii.worker_metrics import EventLoopLagMonitor


@pytest.mark.parametrize("interval", [math.nan, math.inf, 0, -1.0, "0.5", True, None])
def test_a_bad_interval_is_refused_by_name(interval: object) -> None:
    # Before: NaN and infinity were accepted (the first sample scheduled at NaN: never), "0.5" and None raised a
    # TypeError from the comparison, True was taken as one second.
    with pytest.raises(ValueError, match="interval must be positive and a finite number of seconds"):
        EventLoopLagMonitor(interval)  # type: ignore[arg-type]


def test_a_good_interval_is_kept() -> None:
    assert EventLoopLagMonitor(0.25).interval == 0.25
