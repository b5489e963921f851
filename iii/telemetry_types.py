"""OpenTelemetry options of a worker, and the checks of its numbers.

A value that cannot work (a zero or negative interval, a NaN, a number with no float, a batch bigger than the log
queue) in a part of telemetry that is on is refused with a ``ValueError`` naming the field when a worker is made
with it (:func:`checked_otel_config`): before, OpenTelemetry's own ``ValueError`` ended the worker's start on its
thread, and ``register_worker`` waited 30 s to say it could not reach the engine. ``OtelConfig`` itself takes
anything, as the reference's does, and a value of a part that is off (telemetry off, by ``enabled=False`` or
``OTEL_ENABLED=false``; logs off; metrics off) is never used, so it is not refused: one warning names it.
``OTEL_*`` environment values that cannot work are ignored with a warning, OpenTelemetry's own convention for its
variables (see :func:`env_int`).

Example:
    >>> OtelConfig(enabled=False).metrics_export_interval_ms
    60000
    >>> OtelConfig(logs_max_queue_bytes=1 << 20).logs_max_queue_bytes
    1048576
    >>> checked_otel_config(OtelConfig(enabled=True, logs_flush_interval_ms=0))
    Traceback (most recent call last):
    ...
    ValueError: otel.logs_flush_interval_ms must be a number of milliseconds > 0 and <= 10**12, got 0
    >>> checked_otel_config(OtelConfig(enabled=True, logs_enabled=False, logs_flush_interval_ms=0)) is not None
    True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import sys
from dataclasses import dataclass
from typing import Any, Final

from .warn_once import WarnOnce

__all__ = ["LOG_QUEUE_RECORDS_DEFAULT", "MAX_INTERVAL_MS", "OtelConfig", "checked_otel_config", "env_int",
           "otel_enabled"]

log = logging.getLogger(__name__)
_warn_once = WarnOnce(log)  # a bad variable is read at every pipeline built: said once per variable and value

MAX_INTERVAL_MS: Final = 10**12
"""The longest flush or export interval, in milliseconds (about 31 years): a thread's wait takes at most
``threading.TIMEOUT_MAX`` seconds, and a huge int (10**400) has no float at all (OpenTelemetry's thread died of it)."""

LOG_QUEUE_RECORDS_DEFAULT: Final = 2048
"""OpenTelemetry's own default size of its log queue, in records (``OTEL_BLRP_MAX_QUEUE_SIZE`` changes it)."""

_DISABLED_VALUES: Final = frozenset({"false", "0", "no", "off"})
"""``OTEL_ENABLED`` values that turn telemetry off (as ``iii.telemetry`` reads them)."""


@dataclass
class OtelConfig:
    """OpenTelemetry settings; unset values fall back to the ``OTEL_*`` environment.

    Any value is taken when it is made (as the reference's); ``register_worker`` refuses one that cannot work in a
    part of telemetry that is on (:func:`checked_otel_config`, ``ValueError`` naming the field): intervals are
    milliseconds > 0 and <= 10**12 (``metrics_export_interval_ms`` may also be ``math.inf``: no periodic export, as
    OpenTelemetry defines it), ``logs_batch_size`` and ``logs_max_queue_bytes`` whole numbers > 0.
    """

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


def _interval_error(name: str, value: Any, *, inf_ok: bool = False) -> str | None:
    """Why ``value`` cannot be the interval ``name`` (milliseconds), or ``None`` when it can."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        ok = False
    elif inf_ok and value == math.inf:
        ok = True
    else:
        try:
            number = float(value)
        except (OverflowError, TypeError, ValueError):  # an int with no float (10**400)
            ok = False
        else:
            ok = 0 < number <= MAX_INTERVAL_MS
    if ok:
        return None
    also = " (or math.inf: no periodic export)" if inf_ok else ""
    return f"otel.{name} must be a number of milliseconds > 0 and <= 10**12{also}, got {value!r:.100}"


def _count_error(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the count ``name``, or ``None`` when it can."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        return f"otel.{name} must be a whole number > 0, got {value!r:.100}"
    return None


def otel_enabled(config: OtelConfig) -> bool:
    """Whether telemetry is on for ``config``: its ``enabled`` when set, else unless ``OTEL_ENABLED`` is
    ``false|0|no|off`` (the decision ``iii.telemetry`` makes before it starts anything, with this function).

    Example:
        >>> otel_enabled(OtelConfig(enabled=False)), otel_enabled(OtelConfig(enabled=True))
        (False, True)
    """
    if config.enabled is not None:
        return bool(config.enabled)
    return os.environ.get("OTEL_ENABLED", "").strip().lower() not in _DISABLED_VALUES


def _field_errors(config: OtelConfig) -> tuple[list[str], list[str]]:
    """Why numeric fields of ``config`` cannot work (each alone): those telemetry would use, and those it would
    not (its part is off: telemetry, logs or metrics), each a message naming the field."""
    on = otel_enabled(config)
    logs_on = on and (config.logs_enabled is None or bool(config.logs_enabled))
    metrics_on = on and bool(config.metrics_enabled)
    checks = (
        (logs_on, None if config.logs_flush_interval_ms is None
         else _interval_error("logs_flush_interval_ms", config.logs_flush_interval_ms)),
        # (None: OpenTelemetry's own default, OTEL_METRIC_EXPORT_INTERVAL else 60 s, as with the reference)
        (metrics_on, None if config.metrics_export_interval_ms is None
         else _interval_error("metrics_export_interval_ms", config.metrics_export_interval_ms, inf_ok=True)),
        (logs_on, None if config.logs_batch_size is None else _count_error("logs_batch_size", config.logs_batch_size)),
        (logs_on, None if config.logs_max_queue_bytes is None
         else _count_error("logs_max_queue_bytes", config.logs_max_queue_bytes)),
    )
    used = [error for in_use, error in checks if in_use and error is not None]
    unused = [error for in_use, error in checks if not in_use and error is not None]
    return used, unused


def env_int(env_var: str, default: int, minimum: int = 1, maximum: int = sys.maxsize) -> int:
    """The whole number in environment variable ``env_var`` when it is one in ``minimum..maximum``, else
    ``default``: unset quietly, anything else with a warning (OpenTelemetry's convention for its variables: a bad
    value is not fatal). Before, a value below the minimum was dropped without a word, and
    ``OTEL_LOGS_FLUSH_INTERVAL_MS=0`` (or one past any float) reached OpenTelemetry, whose ``ValueError`` stopped
    the worker's start.

    Example:
        >>> os.environ["IIITEST_N"] = "0"
        >>> env_int("IIITEST_N", 100)  # warns once: IIITEST_N='0' is not a whole number >= 1; using 100
        100
        >>> del os.environ["IIITEST_N"]
    """
    raw = os.environ.get(env_var)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is not None and minimum <= value <= maximum:
        return value
    upper = "" if maximum >= sys.maxsize else f" (at most {maximum})"
    _warn_once(f"{env_var}={raw}", "%s=%r is not a whole number >= %d%s; using %d", env_var, raw[:100], minimum,
               upper, default)
    return default


def checked_otel_config(otel: OtelConfig | dict[str, Any] | None) -> OtelConfig | None:
    """``otel`` (``InitOptions.otel``) as an :class:`OtelConfig`, checked: ``ValueError`` naming the field for a
    number that cannot work in a part of telemetry that is on (also one set after the config was made, and a
    ``logs_batch_size`` over the log queue's size, ``OTEL_BLRP_MAX_QUEUE_SIZE`` or 2048), ``TypeError`` for a dict
    with a key that is not a field. A value of a part that is off (``enabled=False`` or, unset, ``OTEL_ENABLED=false``;
    ``logs_enabled=False``; ``metrics_enabled=False``) is never used: it is not refused (the reference connects with
    it), and is named in one warning.

    Example:
        >>> checked_otel_config({"logs_flush_interval_ms": 250}).logs_flush_interval_ms
        250
        >>> checked_otel_config({"enabled": True, "logs_batch_size": -1})
        Traceback (most recent call last):
        ...
        ValueError: otel.logs_batch_size must be a whole number > 0, got -1
        >>> checked_otel_config({"enabled": False, "logs_batch_size": -1}).logs_batch_size  # warns once: unused
        -1
    """
    if otel is None:
        return None
    if isinstance(otel, dict):
        names = {field.name for field in dataclasses.fields(OtelConfig)}
        unknown = sorted(str(key) for key in otel if key not in names)
        if unknown:
            raise TypeError(f"otel has no setting {', '.join(map(repr, unknown))}; its settings are "
                            f"{', '.join(sorted(names))}")
        config = OtelConfig(**otel)
    elif isinstance(otel, OtelConfig):
        config = otel
    else:
        raise TypeError(f"otel must be an OtelConfig, a dict of its settings or None, got {type(otel).__name__}")
    used, unused = _field_errors(config)
    if used:
        raise ValueError(used[0])
    batch = config.logs_batch_size
    if batch is not None and _count_error("logs_batch_size", batch) is None:
        logs_on = otel_enabled(config) and (config.logs_enabled is None or bool(config.logs_enabled))
        queue = env_int("OTEL_BLRP_MAX_QUEUE_SIZE", LOG_QUEUE_RECORDS_DEFAULT)
        if batch > queue:
            error = (f"otel.logs_batch_size must be <= the log queue's size in records ({queue:,}: "
                     f"OTEL_BLRP_MAX_QUEUE_SIZE, else 2048), got {batch!r}")
            if logs_on:
                raise ValueError(error)
            unused.append(error)
    if unused:
        # (said once per process and message: the check runs when the client is made and again at its start)
        message = "; ".join(unused)
        _warn_once(f"otel-unused:{message}", "Unused telemetry setting (its part of telemetry is off): %s", message)
    return config
