"""Fixtures of the peripheral-module tests: telemetry initialised into a list of captured frames."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from iii import telemetry
from iii.telemetry_types import OtelConfig


class Frames(list[bytes]):
    """Captured telemetry frames with helpers to decode them."""

    def bodies(self, prefix: bytes) -> list[dict[str, Any]]:
        return [json.loads(frame[4:]) for frame in self if frame.startswith(prefix)]

    def _records(self, prefix: bytes, resources: str, scopes: str, records: str) -> list[dict[str, Any]]:
        # every OTLP JSON body nests the same way: resource entries > scope entries > records
        return [
            record
            for body in self.bodies(prefix)
            for resource in body[resources]
            for scope in resource[scopes]
            for record in scope[records]
        ]

    def spans(self) -> list[dict[str, Any]]:
        return self._records(b"OTLP", "resourceSpans", "scopeSpans", "spans")

    def logs(self) -> list[dict[str, Any]]:
        return self._records(b"LOGS", "resourceLogs", "scopeLogs", "logRecords")

    def metrics(self) -> dict[str, dict[str, Any]]:
        metrics = self._records(b"MTRC", "resourceMetrics", "scopeMetrics", "metrics")
        return {metric["name"]: metric for metric in metrics}


@pytest.fixture
def frames() -> Iterator[Frames]:
    """``init_otel`` with a sink capturing frames; shut down afterwards."""
    captured = Frames()
    telemetry.shutdown_otel()
    telemetry.init_otel(
        OtelConfig(
            enabled=True,
            service_name="periph-tests",
            fetch_instrumentation_enabled=False,
            metrics_export_interval_ms=3_600_000,  # exported on force_flush only
        ),
        frame_sink=captured.append,
    )
    yield captured
    telemetry.shutdown_otel()
