"""OpenTelemetry numbers that cannot work are refused naming the field when a worker is made with them and their part
of telemetry is on: before, ``OtelConfig`` took a zero, negative, infinite or huge (10**400) interval, and
OpenTelemetry's ``ValueError`` (or an ``OverflowError`` on its thread) came only when the worker started, on the
worker's loop, where it ended the start before connecting: ``register_worker`` waited 30 s, then said it could not
reach the engine. ``OtelConfig`` itself takes anything, as the reference's does, and a value of a part that is off
(telemetry, logs or metrics) is never used, so it is taken with one warning: before, ``OtelConfig(enabled=False,
logs_flush_interval_ms=0)`` raised, where the reference connects. ``OTEL_*`` environment values that cannot work are
ignored with one warning (OpenTelemetry's convention for its variables); before, ``OTEL_LOGS_FLUSH_INTERVAL_MS=0``
reached OpenTelemetry and stopped the start the same way, and one below the minimum was dropped without a word."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

from iii import telemetry, telemetry_types
from iii.telemetry_types import OtelConfig, checked_otel_config, otel_enabled
from iii.warn_once import WarnOnce

BAD_INTERVALS = [0, -1, 10**400, math.inf, -math.inf, math.nan, 10**12 + 1, "100", True]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_ENABLED", raising=False)
    monkeypatch.setattr(telemetry_types, "_warn_once", WarnOnce(telemetry_types.log))  # (said in another test)


@pytest.mark.parametrize("value", BAD_INTERVALS)
def test_a_log_flush_interval_that_cannot_work_is_refused_naming_it(value: Any) -> None:
    config = OtelConfig(enabled=True, logs_flush_interval_ms=value)  # taken when made, as the reference's
    with pytest.raises(ValueError, match=r"otel\.logs_flush_interval_ms must be a number of milliseconds > 0"):
        checked_otel_config(config)
    with pytest.raises(ValueError, match=r"otel\.logs_flush_interval_ms"):
        checked_otel_config({"logs_flush_interval_ms": value})  # (enabled unset, OTEL_ENABLED unset: on)


@pytest.mark.parametrize("value", [v for v in BAD_INTERVALS if v is not math.inf])
def test_a_metrics_interval_that_cannot_work_is_refused_naming_it(value: Any) -> None:
    with pytest.raises(ValueError, match=r"otel\.metrics_export_interval_ms must be a number of milliseconds > 0"):
        checked_otel_config(OtelConfig(enabled=True, metrics_export_interval_ms=value))


@pytest.mark.parametrize(("field", "value"), [
    ("logs_batch_size", 0), ("logs_batch_size", -3), ("logs_batch_size", 2.5), ("logs_batch_size", True),
    ("logs_max_queue_bytes", 0), ("logs_max_queue_bytes", -1), ("logs_max_queue_bytes", 1e6),
])
def test_a_count_that_cannot_work_is_refused_naming_it(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"otel\.{field} must be a whole number > 0"):
        checked_otel_config(OtelConfig(**{"enabled": True, field: value}))
    with pytest.raises(ValueError, match=rf"otel\.{field} must be a whole number > 0"):
        checked_otel_config({"enabled": True, "logs_enabled": True, field: value})


# The attacker's cases (re-attack of F6): the reference SDK connects with each, ours raised ValueError.
UNUSED = [
    ({"enabled": False, "logs_flush_interval_ms": 0}, "logs_flush_interval_ms"),
    ({"enabled": False, "logs_batch_size": 0}, "logs_batch_size"),
    ({"enabled": False, "metrics_export_interval_ms": 0}, "metrics_export_interval_ms"),
    ({"enabled": False, "logs_batch_size": 5000}, "logs_batch_size"),
    ({"enabled": False, "logs_max_queue_bytes": -1}, "logs_max_queue_bytes"),
    ({"enabled": True, "logs_enabled": False, "logs_flush_interval_ms": 0}, "logs_flush_interval_ms"),
    ({"enabled": True, "logs_enabled": False, "logs_batch_size": -3}, "logs_batch_size"),
    ({"enabled": True, "logs_enabled": False, "logs_batch_size": 5000}, "logs_batch_size"),
    ({"enabled": True, "metrics_enabled": False, "metrics_export_interval_ms": 0}, "metrics_export_interval_ms"),
    ({"enabled": True, "metrics_enabled": False, "metrics_export_interval_ms": -1}, "metrics_export_interval_ms"),
]


@pytest.mark.parametrize(("settings", "field"), UNUSED)
def test_a_value_of_a_part_that_is_off_is_taken_with_one_warning(
        caplog: pytest.LogCaptureFixture, settings: dict[str, Any], field: str) -> None:
    with caplog.at_level(logging.WARNING, logger="iii.telemetry_types"):
        config = OtelConfig(**settings)  # before: ValueError here
        assert checked_otel_config(config) is config
        assert checked_otel_config(dict(settings)) is not None
        assert checked_otel_config(config) is config  # (checked again at the worker's start)
    said = [r.getMessage() for r in caplog.records if f"otel.{field}" in r.getMessage()]
    assert len(said) == 1, said


@pytest.mark.parametrize("settings", [{"logs_flush_interval_ms": 0}, {"logs_batch_size": 4096},
                                      {"metrics_export_interval_ms": -5}])
def test_a_value_is_taken_when_otel_enabled_is_false_in_the_environment(
        monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any]) -> None:
    monkeypatch.setenv("OTEL_ENABLED", "false")
    assert checked_otel_config(dict(settings)) is not None
    config = OtelConfig(**settings)
    assert checked_otel_config(config) is config
    # an explicit enabled=True wins over the environment, as in iii.telemetry: refused
    with pytest.raises(ValueError, match=rf"otel\.{next(iter(settings))} must be"):
        checked_otel_config({**settings, "enabled": True})
    monkeypatch.setenv("OTEL_ENABLED", "true")
    with pytest.raises(ValueError, match=rf"otel\.{next(iter(settings))} must be"):
        checked_otel_config(dict(settings))


@pytest.mark.parametrize("env", [None, "", "false", "FALSE", " off ", "0", "no", "true", "1", "yes", "whatever"])
@pytest.mark.parametrize("enabled", [None, True, False])
def test_the_check_makes_the_same_enabled_decision_as_telemetry(
        monkeypatch: pytest.MonkeyPatch, env: str | None, enabled: bool | None) -> None:
    if env is not None:
        monkeypatch.setenv("OTEL_ENABLED", env)
    config = OtelConfig(enabled=enabled)
    assert otel_enabled(config) == telemetry._enabled(config)


def test_values_that_work_are_taken_as_the_reference_takes_them() -> None:
    config = OtelConfig(logs_flush_interval_ms=1, metrics_export_interval_ms=10**12, logs_batch_size=2048,
                        logs_max_queue_bytes=10**400)
    assert checked_otel_config(config) is config
    # (OpenTelemetry takes floats)
    assert checked_otel_config({"logs_flush_interval_ms": 250.5}) is not None
    # infinite: OpenTelemetry's own "no periodic export" (exported at flush and shutdown only)
    assert checked_otel_config({"metrics_export_interval_ms": math.inf}) is not None
    assert checked_otel_config(None) is None
    assert checked_otel_config({"metrics_export_interval_ms": None}) is not None
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
    with pytest.raises(TypeError, match=r"otel has no setting 'flush_ms'"):
        checked_otel_config({"enabled": False, "flush_ms": 5})  # (a key that is no setting: refused, on or off)


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
