"""Two SDK clients starting at once (each on its own loop thread) set telemetry up once: both found it off and both
set it up, the second setting the process's meter provider again ("Overriding of current MeterProvider is not
allowed" on stderr, e.g. the getting-started guide's stream example)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from iii.telemetry import OtelConfig, TelemetryRuntime


def test_clients_starting_at_once_set_telemetry_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = TelemetryRuntime()
    set_up: list[str] = []

    def slow_install(self: TelemetryRuntime, provider: Any) -> None:
        # (the process-wide provider is left alone: other tests' telemetry uses it)
        set_up.append(threading.current_thread().name)
        time.sleep(0.05)  # a set-up takes a while: the other client's start comes meanwhile

    monkeypatch.setattr(TelemetryRuntime, "_install_global_tracer_provider", slow_install)
    cfg = OtelConfig(enabled=True, metrics_enabled=False, logs_enabled=False)
    start = threading.Barrier(2)

    def client() -> None:
        start.wait()
        runtime.init_otel(cfg)

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(set_up) == 1, set_up
        assert runtime.initialized
    finally:
        runtime.shutdown_otel()
