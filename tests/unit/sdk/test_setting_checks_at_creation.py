"""Settings that cannot work fail when the client is made, naming the field, within ~0 s: an ``otel`` dict with an
interval OpenTelemetry refuses made register_worker wait 30.05 s and raise "cannot reach the engine (0 attempts)";
``ReconnectionConfig(initial_delay_ms=10**400)`` raised a bare ``OverflowError`` naming no setting."""

from __future__ import annotations

import time
from typing import Any

import pytest

from iii import InitOptions, OtelConfig, ReconnectionConfig
from iii.iii import III, register_worker

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _telemetry_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_ENABLED", raising=False)


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


@pytest.mark.parametrize(("settings", "env"), [
    ({"enabled": False, "logs_flush_interval_ms": 0}, None), ({"enabled": False, "logs_batch_size": 0}, None),
    ({"enabled": False, "metrics_export_interval_ms": 0}, None), ({"enabled": False, "logs_batch_size": 5000}, None),
    ({"logs_enabled": False, "logs_flush_interval_ms": 0}, None),
    ({"logs_enabled": False, "logs_batch_size": -3}, None),
    ({"metrics_enabled": False, "metrics_export_interval_ms": 0}, None),
    ({"metrics_enabled": False, "metrics_export_interval_ms": -1}, None),
    ({"logs_flush_interval_ms": 0}, "false"), ({"logs_batch_size": 4096}, "false"),
])
@pytest.mark.parametrize("as_config", [False, True])
def test_an_otel_number_of_a_part_that_is_off_is_taken_when_the_client_is_made(
        monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], env: str | None, as_config: bool) -> None:
    """A setting that is switched off is never used: the reference connects with it; ours raised ValueError."""
    if env is not None:
        monkeypatch.setenv("OTEL_ENABLED", env)
    otel: Any = OtelConfig(**settings) if as_config else dict(settings)
    III("ws://127.0.0.1:1", InitOptions(otel=otel)).shutdown()


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
