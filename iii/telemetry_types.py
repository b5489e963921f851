"""OpenTelemetry options of a worker.

Example:
    >>> OtelConfig(enabled=False).metrics_export_interval_ms
    60000
    >>> OtelConfig(logs_max_queue_bytes=1 << 20).logs_max_queue_bytes
    1048576
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OtelConfig:
    """OpenTelemetry settings; unset values fall back to the ``OTEL_*`` environment."""

    enabled: bool | None = None
    service_name: str | None = None
    service_version: str | None = None
    service_namespace: str | None = None
    service_instance_id: str | None = None
    engine_ws_url: str | None = None
    fetch_instrumentation_enabled: bool = True
    logs_enabled: bool | None = None
    logs_flush_interval_ms: int | None = None
    logs_batch_size: int | None = None
    metrics_enabled: bool = True
    metrics_export_interval_ms: int = 60000
    #: Ours: bytes of log records (estimated, as held in memory) that may wait for export; records past it are
    #: dropped and counted (``OTEL_LOGS_MAX_QUEUE_BYTES`` when unset, else 16 MiB). See docs/guides/observability.md.
    logs_max_queue_bytes: int | None = None
