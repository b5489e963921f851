"""Forwards telemetry to an OTLP/HTTP collector as OTLP/JSON (``/v1/traces``, ``/v1/metrics``, ``/v1/logs``).

Workers already send OTLP/JSON, so their frames are forwarded as they came; engine log entries are batched into
one ``ExportLogsServiceRequest``. The queue is bounded: when the collector is slow or down, the newest payloads
are dropped and counted (reported by ``engine::health::check``), never held without limit.

Example:
    >>> collector_url("http://localhost:4317", "logs")
    'http://localhost:4318/v1/logs'
    >>> collector_url("http://otel:4318/v1/traces", "traces")
    'http://otel:4318/v1/traces'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from iii_streams.messages import needs_package

__all__ = ["OtlpForwarder", "collector_url"]

log = logging.getLogger(__name__)


def collector_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL of ``signal`` for a configured (gRPC-style) endpoint."""
    base = endpoint.rstrip("/").replace(":4317", ":4318")
    for known in ("traces", "metrics", "logs"):
        suffix = f"/v1/{known}"
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}/v1/{signal}"


class OtlpForwarder:
    """A background task posting queued payloads; :meth:`submit` never blocks."""

    def __init__(self, endpoint: str, *, max_queued: int = 1024, timeout_s: float = 10.0) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(needs_package("exporting to an OTLP collector", "aiohttp")) from exc
        self._aiohttp = aiohttp
        self.endpoint = endpoint
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(max_queued)
        self._timeout = timeout_s
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def start(self) -> None:
        """Start posting."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="otlp-forwarder")

    def submit(self, signal: str, body: bytes) -> None:
        """Queue one OTLP/JSON body for ``signal`` (``traces``, ``metrics`` or ``logs``); dropped when full."""
        try:
            self._queue.put_nowait((signal, body))
        except asyncio.QueueFull:
            self.dropped += 1

    async def close(self) -> None:
        """Post what is queued (bounded by the timeout), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        aiohttp: Any = self._aiohttp
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                signal, body = await self._queue.get()
                try:
                    async with session.post(collector_url(self.endpoint, signal), data=body,
                                            headers={"Content-Type": "application/json"}) as response:
                        if response.status >= 300:
                            self.failed += 1
                            log.warning("OTLP collector answered %s for %s", response.status, signal)
                        else:
                            self.sent += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failed += 1
                    log.warning("OTLP collector at %s unreachable: %s", self.endpoint, exc)
                finally:
                    self._queue.task_done()
