"""Options, defaults and small value types of the SDK.

Example:
    >>> InitOptions(worker_name="w").invocation_timeout_ms
    30000
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .telemetry_types import OtelConfig

IIIConnectionState = Literal["disconnected", "connecting", "connected", "reconnecting", "failed"]

ConnectionStateCallback = Callable[[IIIConnectionState], None]

DEFAULT_INVOCATION_TIMEOUT_MS = 30000
MAX_QUEUE_SIZE = 1000


@dataclass
class ReconnectionConfig:
    """Backoff between reconnection attempts: ``min(initial * multiplier**n, max)`` ± jitter."""

    initial_delay_ms: int = 1000
    max_delay_ms: int = 30000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.3
    max_retries: int = -1


DEFAULT_RECONNECTION_CONFIG = ReconnectionConfig()


@dataclass
class FunctionRef:
    """A registered function; ``unregister()`` removes it."""

    id: str
    unregister: Callable[[], None]


@dataclass
class TelemetryOptions:
    """Worker metadata reported to the engine."""

    language: str | None = None
    project_name: str | None = None
    framework: str | None = None
    amplitude_api_key: str | None = None


@dataclass
class InitOptions:
    """Options of ``register_worker``."""

    worker_name: str | None = None
    enable_metrics_reporting: bool = True
    invocation_timeout_ms: int = DEFAULT_INVOCATION_TIMEOUT_MS
    reconnection_config: ReconnectionConfig | None = None
    otel: OtelConfig | dict[str, Any] | None = None
    telemetry: TelemetryOptions | None = None
    #: Ours: how long a write may go without the engine taking any of its bytes before the connection counts as
    #: dead and is replaced (an engine that stopped reading; nothing else bounds that wait). A big frame crossing a
    #: slow but live link is never cut. Milliseconds, > 0.
    send_timeout_ms: int = 30_000
    #: Ours: invocations this worker runs at once (handlers running or waiting for a handler thread, and their
    #: answers until written). One more is not run: it is answered at once with a ``worker_busy`` error naming this
    #: setting (one that came without an invocation id is dropped), and a rate-limited warning counts them. Why: an
    #: engine sends a worker every call routed to it, and each waiting run holds its payload and a task, so a flood
    #: grew the worker without bound. > 0.
    max_invocations: int = 10_000
