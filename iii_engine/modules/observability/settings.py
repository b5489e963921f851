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
    iii_engine.settings.ConfigError: exporter: must be 'memory', 'otlp' or 'both', got 'foo'
    >>> s = ObservabilitySettings.from_config({}, env={"OTEL_ENABLED": "yes", "OTEL_MEMORY_MAX_SPANS": "9"})
    >>> s.enabled, s.memory_max_spans
    (True, 9)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal

from pydantic import field_validator

from ...settings import Field, Settings, UnknownKeys, env_text
from .alerts import AlertRule
from .urls import post_url, shown_url

__all__ = ["ObservabilitySettings", "RateLimit", "SamplingRule", "SamplingSettings"]

Exporter = Literal["memory", "otlp", "both"]

# key -> the environment variable production falls back to
_ENV: Final = {
    "enabled": "OTEL_ENABLED", "service_name": "OTEL_SERVICE_NAME", "service_version": "SERVICE_VERSION",
    "service_namespace": "SERVICE_NAMESPACE", "exporter": "OTEL_EXPORTER_TYPE",
    "endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT", "sampling_ratio": "OTEL_TRACES_SAMPLER_ARG",
    "memory_max_spans": "OTEL_MEMORY_MAX_SPANS", "logs_exporter": "OTEL_LOGS_EXPORTER",
    "logs_batch_size": "OTEL_LOGS_BATCH_SIZE", "logs_flush_interval_ms": "OTEL_LOGS_FLUSH_INTERVAL_MS",
    "metrics_max_count": "OTEL_METRICS_MAX_COUNT", "metrics_retention_seconds": "OTEL_METRICS_RETENTION_SECONDS",
}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class SamplingRule(Settings):
    """One rule of ``sampling.rules``: the ratio of the traces of an operation and/or service that are kept.

    Example:
        >>> SamplingRule.parse({"operation": "api.*", "rate": 1.5}, at="sampling.rules[0]")
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: sampling.rules[0].rate: must be <= 1.0, got 1.5
    """

    label: ClassVar[str] = "sampling rule"

    operation: str | None = None
    service: str | None = None
    rate: float = Field(ge=0.0, le=1.0)


class RateLimit(Settings):
    """``sampling.rate_limit``: the most traces kept per second (production reads it as a 32-bit count)."""

    label: ClassVar[str] = "sampling.rate_limit"

    max_traces_per_second: int = Field(ge=0, le=2**32 - 1)


class SamplingSettings(Settings):
    """``sampling:``, production's advanced trace sampling: ``default`` ratio, ordered ``rules``, ``parent_based``
    and ``rate_limit``. Each key is checked and an unknown one refused, as production refuses it (unchecked, a
    ``defualt: 0.1`` was served back by ``engine::sampling::rules`` as if no default were set).

    Example:
        >>> SamplingSettings.parse({"default": 0.25, "rules": [{"service": "billing", "rate": 1}]}).rules[0].rate
        1.0
        >>> SamplingSettings.parse({"defualt": 0.1}, at="sampling")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: sampling: unknown key 'defualt' (did you mean 'default'? allowed: ...)
    """

    label: ClassVar[str] = "sampling"

    default: float | None = Field(None, ge=0.0, le=1.0)
    rules: tuple[SamplingRule, ...] = Field((), strict=False)
    parent_based: bool | None = None
    rate_limit: RateLimit | None = Field(None, strict=False)

    @field_validator("rules", mode="before")
    @classmethod
    def _no_rules(cls, value: Any) -> Any:
        return () if value is None else value  # ``rules:`` with nothing under it reads as null in YAML


class ObservabilitySettings(Settings):
    """Parsed configuration of ``modules::observability::OtelModule``.

    The keys production reads and this engine does not use (``metrics_enabled``, ``logs_retention_seconds`` …)
    are logged at info and ignored, as other unknown keys are with a warning; a near-miss of a known key is refused
    with the closest name (``exportr`` left the exporter on ``otlp``).

    Example:
        >>> ObservabilitySettings.from_config({"exportr": "memory"}, env={})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: unknown key 'exportr' (did you mean 'exporter'? allowed: alerts, enabled, ...)
    """

    # Production refuses every key it does not know; these are its keys this engine has no use for, so a production
    # file starts here (``logs_retention_seconds`` is also close enough to ``metrics_retention_seconds`` to be taken
    # for its typo were it not known).
    unknown_keys: ClassVar[UnknownKeys] = "warn"
    unused_keys: ClassVar[frozenset[str]] = frozenset({
        "metrics_enabled", "metrics_exporter", "logs_enabled", "logs_retention_seconds", "level", "format"})
    label: ClassVar[str] = "observability settings"

    enabled: bool = False
    service_name: str = "iii"
    service_version: str = "unknown"
    service_namespace: str | None = None
    exporter: Exporter = "otlp"
    sampling_ratio: float = Field(1.0, ge=0.0, le=1.0)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, strict=False)
    memory_max_spans: int = Field(1000, ge=1, le=10_000_000)
    logs_exporter: Exporter = "memory"
    # After the exporters: checked only when something is exported to it (an unused endpoint stays unchecked).
    endpoint: str = "http://localhost:4317"
    logs_max_count: int = Field(1000, ge=1, le=10_000_000)
    logs_sampling_ratio: float = Field(1.0, ge=0.0, le=1.0)
    logs_console_output: bool = True
    logs_batch_size: int = Field(100, ge=1, le=10_000)
    logs_flush_interval_ms: int = Field(5000, ge=100, le=3_600_000)
    metrics_max_count: int = Field(10_000, ge=1, le=10_000_000)
    metrics_retention_seconds: int = Field(3600, ge=1, le=365 * 86400)
    alerts: tuple[AlertRule, ...] = Field((), strict=False)
    # Ours: what the module may hold back before it drops telemetry (counted and reported by health).
    ingest_queue_frames: int = Field(1024, ge=1, le=1_000_000)
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1, le=1 << 31)
    ingest_queue_bytes: int = Field(64 * 1024 * 1024, ge=1, le=1 << 36)
    max_frame_entries: int = Field(10_000, ge=1, le=10_000_000)
    max_frame_items: int = Field(100_000, ge=1, le=100_000_000)
    # What one frame's parse may hold at its peak (estimated from its structure before it is parsed): 8 MiB of "{},"
    # held 243 MB, on top of the queue and the stores. 192 MiB, not 128: the reference SDK caps no frame, and 8 MB of
    # log records with twenty attributes each (a 109 MiB peak) is estimated at 137 MiB.
    max_frame_parse_bytes: int = Field(192 * 1024 * 1024, ge=1, le=1 << 36)
    # Ours: the stores' bounds in bytes of memory their entries hold (estimated), besides production's counts.
    memory_max_bytes: int = Field(64 * 1024 * 1024, ge=1, le=1 << 36)
    logs_max_bytes: int = Field(64 * 1024 * 1024, ge=1, le=1 << 36)
    metrics_max_bytes: int = Field(64 * 1024 * 1024, ge=1, le=1 << 36)
    # Ours: how long the engine's stop waits for queued exports to reach the collector (then they are dropped).
    export_stop_timeout_ms: int = Field(3000, ge=0, le=600_000)
    # Whether the file itself named these (production reports them so in its health output).
    service_name_set: bool = False
    exporter_set: bool = False

    @field_validator("exporter", "logs_exporter", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("enabled", "logs_console_output", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        # environment variables (and production's YAML) spell flags as words
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        return value

    @field_validator("sampling_ratio", "logs_sampling_ratio", "memory_max_spans", "logs_max_count",
                     "logs_batch_size", "logs_flush_interval_ms", "metrics_max_count", "metrics_retention_seconds",
                     "ingest_queue_frames", "max_frame_bytes", "ingest_queue_bytes", "max_frame_entries",
                     "max_frame_items", "max_frame_parse_bytes", "memory_max_bytes", "logs_max_bytes",
                     "metrics_max_bytes", "export_stop_timeout_ms", mode="before")
    @classmethod
    def _number(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        kind = float if info.field_name.endswith("ratio") else int
        try:
            return kind(value.strip())
        except ValueError:
            return value  # reported by the field's own check, naming the key

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: Any) -> str:
        # Before, "localhost:4317" or "collector" was accepted and every export failed, one warning per payload.
        data = info.data
        exports = (data.get("enabled") and data.get("exporter") in ("otlp", "both")) or data.get(
            "logs_exporter") in ("otlp", "both")
        if not exports:
            return value
        # (http://collector..example.com was taken: its first export raised UnicodeError and ended the exporter)
        parts = post_url(value)
        if parts.query or parts.fragment or value.strip().endswith(("?", "#")):
            # /v1/<signal> is appended to the endpoint: http://h/?k=1 was posted to http://h/?k=1/v1/logs
            raise ValueError(f"must have no query (?...) nor fragment (#...): /v1/<signal> is added to its path, "
                             f"got {shown_url(value)!r}")
        return value

    @field_validator("alerts")
    @classmethod
    def _distinct_names(cls, rules: tuple[AlertRule, ...]) -> tuple[AlertRule, ...]:
        # An alert's state, its webhook delivery and the action run are found by its name: of two rules named
        # alike, the second one's action was never run.
        seen: dict[str, int] = {}
        for index, rule in enumerate(rules):
            if rule.name in seen:
                raise ValueError(f"two alert rules are named {rule.name!r} (alerts[{seen[rule.name]}] and "
                                 f"alerts[{index}]): each rule needs a name of its own")
            seen[rule.name] = index
        return rules

    @field_validator("sampling", mode="before")
    @classmethod
    def _no_sampling(cls, value: Any) -> Any:
        return {} if value is None else value

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
    def from_config(cls, config: Mapping[str, Any] | None,
                    env: Mapping[str, str] | None = None) -> ObservabilitySettings:
        """Read the module's ``config`` block (``env`` defaults to ``os.environ``)."""
        env = os.environ if env is None else env
        raw = {key: value for key, value in (config or {}).items() if value is not None}
        for key, variable in _ENV.items():
            if key not in raw and env.get(variable) not in (None, ""):
                raw[key] = env[variable]
        for key in ("service_name", "service_version", "service_namespace", "endpoint"):
            if key in raw and not isinstance(raw[key], str):
                # e.g. a version written as a number; one from ${VAR} keeps its text (1.10, not 1.1)
                raw[key] = env_text(raw[key]) or str(raw[key])
        raw["service_name_set"] = (config or {}).get("service_name") is not None
        raw["exporter_set"] = (config or {}).get("exporter") is not None
        return cls.parse(raw)
