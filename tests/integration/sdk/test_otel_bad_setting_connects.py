"""A worker given an OpenTelemetry interval that cannot work connects at once and says which setting: before,
``InitOptions(otel={"logs_flush_interval_ms": 0})`` (also -1, 10**400, ``metrics_export_interval_ms=0``) made
``register_worker`` wait 30.05 s and raise ``ConnectionError: cannot reach the engine … (0 attempts)`` with nothing
logged: OpenTelemetry's ``ValueError`` had ended the client's start, on its loop, before it connected. The worker
now runs without telemetry and logs an error naming the field (the check of ``InitOptions`` when the client is made,
raising it there, belongs to ``iii.iii``). ``OTEL_LOGS_FLUSH_INTERVAL_MS=0`` stopped the start the same way; it is
now ignored with a warning and telemetry runs with the default."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from iii import InitOptions, telemetry, telemetry_types
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
async def test_a_bad_interval_leaves_the_worker_connected_and_names_the_setting(
        engine: Engine, caplog: pytest.LogCaptureFixture, field: str, value: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="iii.telemetry_wiring"):
        took = await _connect(engine.url, InitOptions(otel={"enabled": True, field: value}))
    assert took < 2.0  # before: 30.05 s, then ConnectionError
    assert any(f"otel.{field} must be" in record.getMessage() for record in caplog.records)


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
