"""Fixtures of the SDK unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iii import OtelConfig, telemetry


@pytest.fixture
def frames() -> Iterator[list[bytes]]:
    """Telemetry on (spans only) for one test, its frames collected in the list yielded."""
    sink: list[bytes] = []
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, service_name="light", service_instance_id="i1",
                                   fetch_instrumentation_enabled=False, metrics_enabled=False, logs_enabled=False),
                        frame_sink=sink.append)
    yield sink
    telemetry.shutdown_otel()
