"""A reconnection backoff that cannot work is refused when the client is made, naming the field: a zero or NaN
delay, or a multiplier below 1, made a reconnection loop with no pause against an engine that was down (a core
spinning on connect attempts), and an infinite cap a sleep that never ended."""

from __future__ import annotations

import math
from typing import Any

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.iii import III


@pytest.mark.parametrize(("field", "value"), [
    ("initial_delay_ms", 0), ("initial_delay_ms", -5), ("initial_delay_ms", math.nan),
    ("max_delay_ms", math.inf), ("max_delay_ms", 0),
    ("backoff_multiplier", 0.5), ("backoff_multiplier", math.nan),
    ("jitter_factor", 2.0), ("jitter_factor", -0.1),
    ("max_retries", -2), ("max_retries", 1.5),
])
def test_a_backoff_that_cannot_work_is_refused_naming_its_field(field: str, value: Any) -> None:
    config = ReconnectionConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"reconnection_config\.{field} must be"):
        client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=config))
        client.shutdown()  # (before: made, and connecting with that backoff)


def test_a_working_backoff_and_the_default_are_taken() -> None:
    for options in (InitOptions(), InitOptions(reconnection_config=ReconnectionConfig(
            initial_delay_ms=1, max_delay_ms=1, backoff_multiplier=1.0, jitter_factor=0.0, max_retries=0))):
        client = III("ws://127.0.0.1:1", options)  # it starts connecting: nothing answers on port 1
        client.shutdown()
