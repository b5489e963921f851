"""Forwards telemetry to an OTLP/HTTP collector as OTLP/JSON (``/v1/traces``, ``/v1/metrics``, ``/v1/logs``).

Workers already send OTLP/JSON, so their frames are forwarded as they came; engine log entries are batched into
one ``ExportLogsServiceRequest``. The queue is bounded in payloads and bytes: when the collector is slow or down, the
newest payloads are dropped, counted (reported by ``engine::health::check``) and logged, never held without limit.

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
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from iii_streams.messages import needs_package

__all__ = ["OtlpForwarder", "collector_url"]

log = logging.getLogger(__name__)

# Seconds between two log lines about dropped payloads.
DROP_LOG_INTERVAL_S = 10.0


def collector_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL of ``signal`` for a configured (gRPC-style) endpoint: port 4317 (OTLP/gRPC's) becomes
    4318 (OTLP/HTTP's), and only that port (a text replace of ":4317" sent port 43171's exports to 43181).

    Example:
        >>> collector_url("http://127.0.0.1:43171", "traces"), collector_url("http://[::1]:4317/v1/logs", "logs")
        ('http://127.0.0.1:43171/v1/traces', 'http://[::1]:4318/v1/logs')
    """
    base = endpoint.rstrip("/")
    parts = urlsplit(base)
    try:
        grpc_port = parts.port == 4317
    except ValueError:  # not a port number: the URL is left as it is (the post names it when it fails)
        grpc_port = False
    if grpc_port:
        base = urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:4318"))
    for known in ("traces", "metrics", "logs"):
        suffix = f"/v1/{known}"
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}/v1/{signal}"


class OtlpForwarder:
    """A background task posting queued payloads; :meth:`submit` never blocks."""

    def __init__(self, endpoint: str, *, max_queued: int = 1024, max_queued_bytes: int = 64 * 1024 * 1024,
                 timeout_s: float = 10.0, stop_timeout_s: float = 3.0) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(needs_package("exporting to an OTLP collector", "aiohttp")) from exc
        self._aiohttp = aiohttp
        self.endpoint = endpoint
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(max_queued)
        # Bodies are up to max_frame_bytes each: a count alone let a stalled collector hold 1024 x 8 MiB.
        self.max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        self._drop_logged_at = self._failure_logged_at = -DROP_LOG_INTERVAL_S
        self._timeout = timeout_s
        # The stop's own bound: a stalled collector held the engine's stop for the whole post timeout (10 s).
        self._stop_timeout = stop_timeout_s
        self._in_flight: int | None = None  # bytes of the payload being posted
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def start(self) -> None:
        """Start posting."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="otlp-forwarder")

    def submit(self, signal: str, body: bytes) -> None:
        """Queue one OTLP/JSON body for ``signal`` (``traces``, ``metrics`` or ``logs``); dropped when full."""
        if self._queued_bytes + len(body) > self.max_queued_bytes or self._queue.full():
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:  # one line per interval, not one per payload
                self._drop_logged_at = now
                log.warning("OTLP export queue full (%d payloads, %d bytes): dropped %d payloads so far",
                            self._queue.qsize(), self._queued_bytes, self.dropped)
            return
        self._queue.put_nowait((signal, body))
        self._queued_bytes += len(body)

    async def close(self) -> None:
        """Post what is queued within ``stop_timeout_s``, then stop; what is left is counted as dropped and logged.

        Example:
            >>> async def main() -> int:
            ...     forwarder = OtlpForwarder("http://127.0.0.1:9", stop_timeout_s=0)
            ...     forwarder.start()
            ...     forwarder.submit("logs", b"{}")
            ...     await forwarder.close()
            ...     return forwarder.dropped
            >>> asyncio.run(main())
            1
        """
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._stop_timeout)
        in_flight = self._in_flight  # read before the cancellation ends the post
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        left = self._queue.qsize() + (in_flight is not None)
        if left:
            left_bytes = self._queued_bytes + (in_flight or 0)
            self.dropped += left
            log.warning("OTLP export stopped with %d payload(s) (%d bytes) not delivered to %s within %g s",
                        left, left_bytes, self.endpoint, self._stop_timeout)

    def _failure(self, problem: str) -> None:
        self.failed += 1
        now = time.monotonic()
        # A collector that is down fails every payload: one line per interval, not one per payload.
        if now - self._failure_logged_at >= DROP_LOG_INTERVAL_S:
            self._failure_logged_at = now
            log.warning("OTLP collector at %s %s (%d failed so far)", self.endpoint, problem, self.failed)

    async def _run(self) -> None:
        aiohttp: Any = self._aiohttp
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                signal, body = await self._queue.get()
                self._queued_bytes -= len(body)
                self._in_flight = len(body)
                try:
                    async with session.post(collector_url(self.endpoint, signal), data=body,
                                            headers={"Content-Type": "application/json"}) as response:
                        if response.status >= 300:
                            self._failure(f"answered HTTP {response.status} for {signal}")
                        else:
                            self.sent += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self._failure(f"unreachable: {type(exc).__name__}: {exc}")
                finally:
                    self._in_flight = None
                    self._queue.task_done()
