"""Settings that cannot work fail when the client is made, naming the field, within ~0 s: an ``otel`` dict with an
interval OpenTelemetry refuses made register_worker wait 30.05 s and raise "cannot reach the engine (0 attempts)";
``ReconnectionConfig(initial_delay_ms=10**400)`` raised a bare ``OverflowError`` naming no setting."""

from __future__ import annotations

import time
from typing import Any

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.iii import III, register_worker

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("field", "value"), [
    ("logs_flush_interval_ms", 0), ("logs_flush_interval_ms", -1), ("logs_flush_interval_ms", 10**400),
    ("logs_flush_interval_ms", float("inf")), ("metrics_export_interval_ms", 0),
    ("metrics_export_interval_ms", 10**400), ("logs_batch_size", 0),
])
def test_an_otel_number_that_cannot_work_fails_register_worker_at_once(field: str, value: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"otel\.{field} must be"):
        register_worker("ws://127.0.0.1:1", InitOptions(otel={field: value}))
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(("field", "value"), [
    ("initial_delay_ms", 10**400), ("max_delay_ms", 10**400), ("initial_delay_ms", 10**12 + 1),
    ("backoff_multiplier", 10**400),
])
def test_a_reconnection_number_past_any_float_is_refused_naming_its_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"reconnection_config\.{field} must be a finite number"):
        client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=ReconnectionConfig(**{field: value})))
        client.shutdown()


def test_the_longest_reconnection_delay_is_taken() -> None:
    config = ReconnectionConfig(initial_delay_ms=10**12, max_delay_ms=10**12)
    III("ws://127.0.0.1:1", InitOptions(reconnection_config=config)).shutdown()
