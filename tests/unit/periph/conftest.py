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

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for body in self.bodies(b"OTLP")
            for rs in body["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]

    def logs(self) -> list[dict[str, Any]]:
        return [
            record
            for body in self.bodies(b"LOGS")
            for rl in body["resourceLogs"]
            for sl in rl["scopeLogs"]
            for record in sl["logRecords"]
        ]

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {
            metric["name"]: metric
            for body in self.bodies(b"MTRC")
            for rm in body["resourceMetrics"]
            for sm in rm["scopeMetrics"]
            for metric in sm["metrics"]
        }


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
