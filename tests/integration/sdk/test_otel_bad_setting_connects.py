"""An OpenTelemetry interval that cannot work is refused by ``register_worker`` at once, naming the setting: before,
``InitOptions(otel={"logs_flush_interval_ms": 0})`` (also -1, 10**400, ``metrics_export_interval_ms=0``) made
``register_worker`` wait 30.05 s and raise ``ConnectionError: cannot reach the engine … (0 attempts)`` with nothing
logged: OpenTelemetry's ``ValueError`` had ended the client's start, on its loop, before it connected. (A config
changed after the client was made, so that its start meets it, leaves the worker running without telemetry and an
error logged naming the field.) ``OTEL_LOGS_FLUSH_INTERVAL_MS=0`` stopped the start the same way; it is now ignored
with a warning and telemetry runs with the default. A setting of a part of telemetry that is off (``enabled=False``,
``OTEL_ENABLED=false``, ``logs_enabled=False``, ``metrics_enabled=False``) is never used and does not stop the worker
(the reference SDK connects with it; ours raised ``ValueError`` in ``register_worker``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from iii import InitOptions, OtelConfig, telemetry, telemetry_types
from iii.iii import register_worker
from iii.warn_once import WarnOnce
from iii_engine import Engine

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("fresh_telemetry")]


async def _connect(url: str, options: InitOptions, connected: Callable[[], None] = lambda: None) -> float:
    """Seconds ``register_worker`` took; the worker answers a call, ``connected()`` runs, the worker is shut down."""
    def run() -> float:
        started = time.monotonic()
        client = register_worker(url, options)
        took = time.monotonic() - started
        try:
            assert client.trigger({"function_id": "engine::functions::list", "payload": {}}) is not None
            connected()
        finally:
            client.shutdown()
        return took
    return await asyncio.to_thread(run)


@pytest.mark.parametrize(("field", "value"), [
    ("logs_flush_interval_ms", 0), ("logs_flush_interval_ms", -1), ("logs_flush_interval_ms", 10**400),
    ("metrics_export_interval_ms", 0), ("metrics_export_interval_ms", 10**400),
])
async def test_a_bad_interval_is_refused_at_once_naming_the_setting(engine: Engine, field: str, value: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match=f"otel.{field} must be"):
        await _connect(engine.url, InitOptions(otel={"enabled": True, field: value}))
    assert time.monotonic() - started < 2.0  # before: 30.05 s, then ConnectionError


async def test_a_bad_interval_met_at_the_start_leaves_the_worker_connected_and_names_the_setting(
        engine: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start's own check, for a config the client's creation did not see so (changed after it)."""
    import iii.iii as iii_module

    monkeypatch.setattr(iii_module, "checked_otel_config", lambda otel: otel)  # (the creation's check passed)
    with caplog.at_level(logging.ERROR, logger="iii.telemetry_wiring"):
        took = await _connect(engine.url, InitOptions(otel={"enabled": True, "logs_flush_interval_ms": 0}))
    assert took < 2.0
    assert any("otel.logs_flush_interval_ms must be" in record.getMessage() for record in caplog.records)


async def test_a_bad_flush_interval_in_the_environment_is_ignored_with_a_warning(
        engine: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LOGS_FLUSH_INTERVAL_MS", "0")
    monkeypatch.setattr(telemetry_types, "_warn_once", WarnOnce(telemetry_types.log))  # (said in another test)
    delays: list[float] = []

    def flush_delay() -> None:  # telemetry did start, with the default flush interval
        (processor,) = telemetry.runtime().log_provider._multi_log_record_processor._log_record_processors
        delays.append(processor._batch_processor._schedule_delay_millis)

    with caplog.at_level(logging.WARNING, logger="iii.telemetry_types"):
        took = await _connect(engine.url, InitOptions(otel={"enabled": True, "metrics_enabled": False}), flush_delay)
    assert delays == [100]
    assert took < 2.0
    assert any("OTEL_LOGS_FLUSH_INTERVAL_MS='0'" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(("settings", "env"), [
    ({"enabled": False, "logs_flush_interval_ms": 0}, None), ({"enabled": False, "logs_batch_size": 0}, None),
    ({"enabled": False, "metrics_export_interval_ms": 0}, None), ({"enabled": False, "logs_batch_size": 5000}, None),
    ({"enabled": True, "logs_enabled": False, "logs_flush_interval_ms": 0}, None),
    ({"enabled": True, "logs_enabled": False, "logs_batch_size": -3}, None),
    ({"enabled": True, "metrics_enabled": False, "metrics_export_interval_ms": 0}, None),
    ({"enabled": True, "metrics_enabled": False, "metrics_export_interval_ms": -1}, None),
    ({"logs_flush_interval_ms": 0}, "false"), ({"logs_batch_size": 4096}, "false"),
])
@pytest.mark.parametrize("as_config", [False, True])
async def test_a_bad_setting_of_a_part_that_is_off_connects(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], env: str | None,
        as_config: bool) -> None:
    if env is None:
        monkeypatch.delenv("OTEL_ENABLED", raising=False)
    else:
        monkeypatch.setenv("OTEL_ENABLED", env)
    otel: Any = OtelConfig(**settings) if as_config else dict(settings)
    took = await _connect(engine.url, InitOptions(otel=otel))
    assert took < 2.0
