"""The observability module's settings: production's keys, each read from the YAML value, then the environment
variable production reads, then the default. A value of the wrong type or out of its range stops the module
(and so the engine's start) with a message naming the key.

Example:
    >>> s = ObservabilitySettings.from_config({"exporter": "memory", "memory_max_spans": 50}, env={})
    >>> s.exporter, s.memory_max_spans, s.keeps_spans
    ('memory', 50, False)
    >>> ObservabilitySettings.from_config({"exporter": "foo"}, env={})
    Traceback (most recent call last):
    ...
    ValueError: observability: exporter must be one of memory, otlp, both (got 'foo')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ObservabilitySettings"]

_EXPORTERS = ("memory", "otlp", "both")


def _pick(config: Mapping[str, Any], env: Mapping[str, str], key: str, env_key: str | None, default: Any) -> Any:
    if config.get(key) is not None:
        return config[key]
    if env_key is not None and env.get(env_key) not in (None, ""):
        return env[env_key]
    return default


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"observability: {key} must be true or false (got {value!r})")


def _number(value: Any, key: str, kind: type, low: float, high: float) -> Any:
    try:
        number = kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"observability: {key} must be a number from {low:g} to {high:g} (got {value!r})")
    return number


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    text = str(value).lower()
    if text not in choices:
        raise ValueError(f"observability: {key} must be one of {', '.join(choices)} (got {value!r})")
    return text


@dataclass(frozen=True)
class ObservabilitySettings:
    """Parsed configuration of ``modules::observability::OtelModule``."""

    enabled: bool = False
    service_name: str = "iii"
    service_name_set: bool = False
    service_version: str = "unknown"
    service_namespace: str | None = None
    exporter: str = "otlp"
    exporter_set: bool = False
    endpoint: str = "http://localhost:4317"
    sampling_ratio: float = 1.0
    sampling: Mapping[str, Any] = field(default_factory=dict)
    memory_max_spans: int = 1000
    logs_exporter: str = "memory"
    logs_max_count: int = 1000
    logs_sampling_ratio: float = 1.0
    logs_console_output: bool = True
    logs_batch_size: int = 100
    logs_flush_interval_ms: int = 5000
    metrics_max_count: int = 10_000
    metrics_retention_seconds: int = 3600
    alerts: tuple[Mapping[str, Any], ...] = ()
    # Ours: what the module may hold back before it drops telemetry (counted and reported by health).
    ingest_queue_frames: int = 1024
    max_frame_bytes: int = 8 * 1024 * 1024

    @property
    def keeps_spans(self) -> bool:
        """Whether a span store exists: tracing enabled with the ``memory`` or ``both`` exporter (``both`` keeps
        and exports here; production treats it as ``otlp`` at start-up)."""
        return self.enabled and self.exporter in ("memory", "both")

    @property
    def exports(self) -> bool:
        """Whether spans and metrics are forwarded to an OTLP collector."""
        return self.enabled and self.exporter in ("otlp", "both")

    @property
    def exports_logs(self) -> bool:
        """Whether logs are forwarded to an OTLP collector."""
        return self.logs_exporter in ("otlp", "both")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ObservabilitySettings:
        """Read the module's ``config`` block (``env`` defaults to ``os.environ``)."""
        env = os.environ if env is None else env
        alerts = config.get("alerts") or []
        if not isinstance(alerts, list) or not all(isinstance(rule, Mapping) for rule in alerts):
            raise ValueError("observability: alerts must be a list of rules")
        sampling = config.get("sampling") or {}
        if not isinstance(sampling, Mapping):
            raise ValueError("observability: sampling must be a mapping")
        namespace = _pick(config, env, "service_namespace", "SERVICE_NAMESPACE", None)
        return cls(
            enabled=_bool(_pick(config, env, "enabled", "OTEL_ENABLED", False), "enabled"),
            service_name=str(_pick(config, env, "service_name", "OTEL_SERVICE_NAME", "iii")),
            service_name_set=config.get("service_name") is not None,
            service_version=str(_pick(config, env, "service_version", "SERVICE_VERSION", "unknown")),
            service_namespace=None if namespace is None else str(namespace),
            exporter=_choice(_pick(config, env, "exporter", "OTEL_EXPORTER_TYPE", "otlp"), "exporter", _EXPORTERS),
            exporter_set=config.get("exporter") is not None,
            endpoint=str(_pick(config, env, "endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")),
            sampling_ratio=_number(_pick(config, env, "sampling_ratio", "OTEL_TRACES_SAMPLER_ARG", 1.0),
                                   "sampling_ratio", float, 0.0, 1.0),
            sampling=dict(sampling),
            memory_max_spans=_number(_pick(config, env, "memory_max_spans", "OTEL_MEMORY_MAX_SPANS", 1000),
                                     "memory_max_spans", int, 1, 10_000_000),
            logs_exporter=_choice(_pick(config, env, "logs_exporter", "OTEL_LOGS_EXPORTER", "memory"),
                                  "logs_exporter", _EXPORTERS),
            logs_max_count=_number(config.get("logs_max_count", 1000), "logs_max_count", int, 1, 10_000_000),
            logs_sampling_ratio=_number(config.get("logs_sampling_ratio", 1.0), "logs_sampling_ratio", float,
                                        0.0, 1.0),
            logs_console_output=_bool(config.get("logs_console_output", True), "logs_console_output"),
            logs_batch_size=_number(_pick(config, env, "logs_batch_size", "OTEL_LOGS_BATCH_SIZE", 100),
                                    "logs_batch_size", int, 1, 10_000),
            logs_flush_interval_ms=_number(
                _pick(config, env, "logs_flush_interval_ms", "OTEL_LOGS_FLUSH_INTERVAL_MS", 5000),
                "logs_flush_interval_ms", int, 100, 3_600_000),
            metrics_max_count=_number(_pick(config, env, "metrics_max_count", "OTEL_METRICS_MAX_COUNT", 10_000),
                                      "metrics_max_count", int, 1, 10_000_000),
            metrics_retention_seconds=_number(
                _pick(config, env, "metrics_retention_seconds", "OTEL_METRICS_RETENTION_SECONDS", 3600),
                "metrics_retention_seconds", int, 1, 365 * 86400),
            alerts=tuple(alerts),
            ingest_queue_frames=_number(config.get("ingest_queue_frames", 1024), "ingest_queue_frames", int, 1,
                                        1_000_000),
            max_frame_bytes=_number(config.get("max_frame_bytes", 8 * 1024 * 1024), "max_frame_bytes", int, 1,
                                    1 << 31),
        )
