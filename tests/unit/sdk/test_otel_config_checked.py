"""OpenTelemetry numbers that cannot work are refused naming the field: before, ``OtelConfig`` took a zero, negative,
infinite or huge (10**400) interval, and OpenTelemetry's ``ValueError`` (or an ``OverflowError`` on its thread) came
only when the worker started, on the worker's loop, where it ended the start before connecting: ``register_worker``
waited 30 s, then said it could not reach the engine. ``OTEL_*`` environment values that cannot work are ignored
with one warning (OpenTelemetry's convention for its variables); before, ``OTEL_LOGS_FLUSH_INTERVAL_MS=0`` reached
OpenTelemetry and stopped the start the same way, and one below the minimum was dropped without a word."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

from iii import telemetry, telemetry_types
from iii.telemetry_types import OtelConfig, checked_otel_config
from iii.warn_once import WarnOnce

BAD_INTERVALS = [0, -1, 10**400, math.inf, -math.inf, math.nan, 10**12 + 1, "100", True]


@pytest.mark.parametrize("value", BAD_INTERVALS)
def test_a_log_flush_interval_that_cannot_work_is_refused_naming_it(value: Any) -> None:
    with pytest.raises(ValueError, match=r"otel\.logs_flush_interval_ms must be a number of milliseconds > 0"):
        OtelConfig(logs_flush_interval_ms=value)
    with pytest.raises(ValueError, match=r"otel\.logs_flush_interval_ms"):
        checked_otel_config({"logs_flush_interval_ms": value})


@pytest.mark.parametrize("value", [v for v in BAD_INTERVALS if v is not math.inf])
def test_a_metrics_interval_that_cannot_work_is_refused_naming_it(value: Any) -> None:
    with pytest.raises(ValueError, match=r"otel\.metrics_export_interval_ms must be a number of milliseconds > 0"):
        OtelConfig(metrics_export_interval_ms=value)


@pytest.mark.parametrize(("field", "value"), [
    ("logs_batch_size", 0), ("logs_batch_size", -3), ("logs_batch_size", 2.5), ("logs_batch_size", True),
    ("logs_max_queue_bytes", 0), ("logs_max_queue_bytes", -1), ("logs_max_queue_bytes", 1e6),
])
def test_a_count_that_cannot_work_is_refused_naming_it(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"otel\.{field} must be a whole number > 0"):
        OtelConfig(**{field: value})


def test_values_that_work_are_taken_as_the_reference_takes_them() -> None:
    config = OtelConfig(logs_flush_interval_ms=1, metrics_export_interval_ms=10**12, logs_batch_size=2048,
                        logs_max_queue_bytes=10**400)
    assert checked_otel_config(config) is config
    # (OpenTelemetry takes floats)
    assert OtelConfig(logs_flush_interval_ms=250.5).logs_flush_interval_ms == 250.5  # type: ignore[arg-type]
    # infinite: OpenTelemetry's own "no periodic export" (exported at flush and shutdown only)
    assert OtelConfig(metrics_export_interval_ms=math.inf).metrics_export_interval_ms == math.inf  # type: ignore[arg-type]
    assert checked_otel_config(None) is None
    assert OtelConfig(metrics_export_interval_ms=None).metrics_export_interval_ms is None  # type: ignore[arg-type]
    assert checked_otel_config({"logs_batch_size": 5000, "logs_enabled": False}) is not None  # logs off: unused


def test_a_value_set_after_the_config_was_made_and_a_batch_over_the_queue_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = OtelConfig()
    config.logs_flush_interval_ms = 0
    with pytest.raises(ValueError, match=r"otel\.logs_flush_interval_ms"):
        checked_otel_config(config)
    with pytest.raises(ValueError, match=r"otel\.logs_batch_size must be <= the log queue's size in records \(2,048"):
        checked_otel_config({"logs_batch_size": 2049})
    monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "4096")
    assert checked_otel_config({"logs_batch_size": 4096}) is not None
    with pytest.raises(TypeError, match=r"otel has no setting 'flush_ms'"):
        checked_otel_config({"flush_ms": 5})


@pytest.mark.parametrize(("variable", "raw", "read", "expected"), [
    ("OTEL_LOGS_FLUSH_INTERVAL_MS", "0", "flush", 100),
    ("OTEL_LOGS_FLUSH_INTERVAL_MS", "-5", "flush", 100),
    ("OTEL_LOGS_FLUSH_INTERVAL_MS", "1" + "0" * 400, "flush", 100),
    ("OTEL_LOGS_FLUSH_INTERVAL_MS", "soon", "flush", 100),
    ("OTEL_LOGS_BATCH_SIZE", "0", "batch", 1),
    ("OTEL_LOGS_BATCH_SIZE", "5000", "batch", 1),  # over OpenTelemetry's queue (2,048): it refused to start
    ("OTEL_BLRP_MAX_QUEUE_SIZE", "1" + "0" * 30, "queue", 2048),  # no deque of that length
    ("OTEL_LOGS_MAX_QUEUE_BYTES", "0", "bytes", 16 * 1024 * 1024),
])
def test_an_environment_value_that_cannot_work_is_ignored_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, raw: str, read: str,
        expected: int) -> None:
    monkeypatch.setenv(variable, raw)
    monkeypatch.setattr(telemetry_types, "_warn_once", WarnOnce(telemetry_types.log))  # (said in another test)
    reads: dict[str, Callable[[], int]] = {"flush": lambda: telemetry._log_flush_ms(OtelConfig()),
             "batch": lambda: telemetry._log_batch_size(OtelConfig()),
             "queue": telemetry._log_queue_records,
             "bytes": lambda: telemetry._log_queue_bytes(OtelConfig())}
    with caplog.at_level(logging.WARNING, logger="iii.telemetry_types"):
        assert [reads[read]() for _ in range(3)] == [expected] * 3
    said = [r.getMessage() for r in caplog.records if variable in r.getMessage()]
    assert len(said) == 1  # once per process and value


def test_good_environment_values_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LOGS_FLUSH_INTERVAL_MS", "250")
    monkeypatch.setenv("OTEL_LOGS_BATCH_SIZE", "64")
    assert (telemetry._log_flush_ms(OtelConfig()), telemetry._log_batch_size(OtelConfig())) == (250, 64)
    assert telemetry._log_flush_ms(OtelConfig(logs_flush_interval_ms=5)) == 5  # explicit first, as the reference
