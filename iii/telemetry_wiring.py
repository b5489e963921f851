"""Connects one client to the optional telemetry (``iii.telemetry``): started once with the client, its frames
sent on the client's own socket (docs/protocol.md#sdk-improvements S12), released on shutdown so other clients keep it.

Example:
    >>> wiring = TelemetryWiring()
    >>> wiring.trace.headers() if not wiring.started else (None, None)
    (None, None)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .telemetry_types import checked_otel_config
from .trace_scope import TraceScope, load_telemetry

__all__ = ["TelemetryWiring", "checked_otel_config"]

log = logging.getLogger(__name__)


class TelemetryWiring:
    """The telemetry side of one client: its :class:`TraceScope` and the start/release of the shared pipeline."""

    def __init__(self) -> None:
        self.trace = TraceScope(None)
        self.started = False

    def start(self, client: object, otel: Any, loop: asyncio.AbstractEventLoop,
              sink: Callable[[bytes], None]) -> None:
        """Start telemetry for ``client`` (once; later calls do nothing); without OpenTelemetry it stays off."""
        if self.started:
            return
        self.started = True
        tel = load_telemetry()
        if tel is None:
            return
        try:
            config = checked_otel_config(otel)
        except (TypeError, ValueError) as exc:
            # (made with a config that was changed after its check) This runs in the client's start, on its loop:
            # raised here, the start ended before connecting and register_worker waited 30 s to say "cannot reach
            # the engine", naming neither telemetry nor the setting. The worker runs, without telemetry, and says so.
            log.error("Telemetry is off for this worker: %s", exc)
            return
        try:
            # Telemetry is process-wide: counted per client so one client's shutdown keeps it on for others.
            tel.start_client(client, config, loop, sink)
        except ImportError:
            log.debug("OpenTelemetry not available")
            return
        except Exception:
            # (as above: a failure of OpenTelemetry's own must not keep the worker from connecting, unsaid)
            log.exception("OpenTelemetry could not start: this worker runs without telemetry")
            return
        self.trace = TraceScope(tel)

    async def release(self, client: object) -> None:
        """Before the socket closes: a surviving client takes over the frames, or (last client) the final flush
        still reaches the engine."""
        tel = load_telemetry()
        if tel is None:
            return
        try:
            await tel.release_client_async(client)
        except Exception:
            log.debug("OpenTelemetry shutdown failed", exc_info=True)
