"""Forwards telemetry to an OTLP/HTTP collector as OTLP/JSON (``/v1/traces``, ``/v1/metrics``, ``/v1/logs``).

Workers already send OTLP/JSON, so their frames are forwarded as they came; the engine's own records (its
``call`` spans, ``engine::log::*`` entries) are gathered by a :class:`RecordBatch` per signal into one request of up to
``logs_batch_size`` log records (:data:`SPAN_BATCH_SIZE` spans), sent when full or ``logs_flush_interval_ms``
after its first record. The queue is bounded in payloads and
bytes: when the collector is slow or down, the newest payloads are dropped, counted (reported by
``engine::health::check``) and logged, never held without limit.

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
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from iii.wire import dumps
from iii_streams.messages import needs_package

from .urls import scrubbed, shown_url

__all__ = ["OtlpForwarder", "RecordBatch", "collector_url", "http_failure"]

log = logging.getLogger(__name__)

# Seconds between two log lines about dropped payloads.
DROP_LOG_INTERVAL_S = 10.0
SPAN_BATCH_SIZE = 512
"""The engine's ``call`` spans in one export request at most (OpenTelemetry's BatchSpanProcessor default)."""
BATCH_MAX_BYTES = 1024 * 1024
"""A batch is sent once its records take this many bytes of JSON, whatever their count."""
_SLOT = "__iii_records__"


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


def http_failure(status: int, location: str | None) -> str:
    """What an answer of HTTP ``status`` that is not a success is logged as; a redirect (3xx, not followed: aiohttp
    follows one with a GET without the body) names where it pointed: scheme, host and port only (:func:`shown_url`).

    Example:
        >>> http_failure(500, None)
        'answered HTTP 500'
        >>> http_failure(302, "http://u:pw@elsewhere/in?token=t")
        'answered HTTP 302 redirecting to http://u:***@elsewhere/… (redirects are not followed)'
    """
    if 300 <= status < 400:
        target = shown_url(location) if location else "nowhere (no Location)"
        return f"answered HTTP {status} redirecting to {target} (redirects are not followed)"
    return f"answered HTTP {status}"


class RecordBatch:
    """Records of one signal (OTLP span bodies, log records) gathered into one request for an
    :class:`OtlpForwarder`: submitted once ``size`` records or :data:`BATCH_MAX_BYTES` are held, ``interval_s``
    after the first record, or at :meth:`flush`. ``envelope(records)`` is the request around a list of records.
    Loop thread only.

    Before, each span and log entry was a request of its own: against a collector answering at once, 3,265
    records were exported and 74,049 dropped in 10 s (about 330 posts a second, one at a time).

    Example:
        >>> async def main() -> list[bytes]:
        ...     sent: list[bytes] = []
        ...     batch = RecordBatch(lambda signal, body, n: sent.append(body), "logs",
        ...                         lambda records: {"logRecords": records}, size=2, interval_s=60)
        ...     batch.add({"a": 1}); batch.add({"b": 2}); batch.add({"c": 3})
        ...     batch.flush()
        ...     return sent
        >>> asyncio.run(main())
        [b'{"logRecords":[{"a":1},{"b":2}]}', b'{"logRecords":[{"c":3}]}']
    """

    def __init__(self, submit: Callable[[str, bytes, int], object], signal: str,
                 envelope: Callable[[list[Any]], dict[str, Any]], *, size: int, interval_s: float) -> None:
        self._submit = submit
        self.signal = signal
        self._envelope = envelope
        self._size = size
        self._interval = interval_s
        self._records: list[str] = []  # each already encoded: the byte bound is exact and the flush cheap
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def add(self, record: dict[str, Any]) -> None:
        """One record for the next request (after :meth:`close`, a request of its own, submitted at once)."""
        text = dumps(record)
        self._records.append(text)
        self._bytes += len(text)
        if self._closed or len(self._records) >= self._size or self._bytes >= BATCH_MAX_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Submit the records held now as one request (nothing when none is held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._records:
            return
        records, self._records, self._bytes = self._records, [], 0
        head, tail = dumps(self._envelope([_SLOT])).split(f'["{_SLOT}"]', 1)
        self._submit(self.signal, f"{head}[{','.join(records)}]{tail}".encode(), len(records))

    def close(self) -> None:
        """Submit what is held, and from now on each record at once: the module's stop calls this once the
        forwarder is closed, which counts them as dropped. Why: records added while the stop waited for the
        forwarder stayed here, with a timer the stopped loop never ran, neither exported nor counted (58 to 488
        records a stop).

        Example:
            >>> async def main() -> list[int]:
            ...     sent: list[int] = []
            ...     batch = RecordBatch(lambda signal, body, n: sent.append(n), "logs",
            ...                         lambda records: {"logRecords": records}, size=100, interval_s=60)
            ...     batch.add({"a": 1}); batch.add({"b": 2}); batch.close(); batch.add({"c": 3})
            ...     return sent
            >>> asyncio.run(main())
            [2, 1]
        """
        self._closed = True
        self.flush()


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
        self._queue: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue(max_queued)
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
        #: records (spans, log records, metrics) in payloads sent / dropped / failed (the collector refused them or
        #: could not be reached): before, a failure counted the payload only, however many records it held
        self.sent_records = 0
        self.dropped_records = 0
        self.failed_records = 0
        self._queued_records = 0
        self._in_flight_records = 0
        #: set at the end of :meth:`close`: what is submitted later is counted as dropped at once
        self.closed = False
        self._late_logged_at = -DROP_LOG_INTERVAL_S

    def start(self) -> None:
        """Start posting."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="otlp-forwarder")

    def submit(self, signal: str, body: bytes, records: int = 0) -> None:
        """Queue one OTLP/JSON body for ``signal`` (``traces``, ``metrics`` or ``logs``) holding ``records``
        records (spans, log records, metrics); dropped when full, or when :meth:`close` ended (counted either way:
        before, a payload submitted after the close sat in the queue for good, neither posted nor counted)."""
        if self.closed:
            self.dropped += 1
            self.dropped_records += records
            now = time.monotonic()
            if now - self._late_logged_at >= DROP_LOG_INTERVAL_S:
                self._late_logged_at = now
                log.warning("OTLP export: a %s payload (%d records) submitted after the exporter stopped is dropped "
                            "(%d payloads, %d records dropped so far)", signal, records, self.dropped,
                            self.dropped_records)
            return
        if self._queued_bytes + len(body) > self.max_queued_bytes or self._queue.full():
            self.dropped += 1
            self.dropped_records += records
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:  # one line per interval, not one per payload
                self._drop_logged_at = now
                log.warning("OTLP export queue full (%d payloads, %d bytes): dropped %d payloads so far",
                            self._queue.qsize(), self._queued_bytes, self.dropped)
            return
        self._queue.put_nowait((signal, body, records))
        self._queued_bytes += len(body)
        self._queued_records += records

    async def close(self, timeout_s: float | None = None) -> None:
        """Post what is queued within ``timeout_s`` (by default ``stop_timeout_s``: the module's stop gives what its
        one bound has left), then stop; what is left is counted as dropped and logged, and so is whatever is
        submitted later (:attr:`closed`).

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
            self.closed = True
            return
        bound = self._stop_timeout if timeout_s is None else timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), bound)
        in_flight = self._in_flight  # read before the cancellation ends the post
        in_flight_records = self._in_flight_records
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # No await from here on: what is queued now is all that is counted below, and the queue is emptied (before,
        # it was counted and left in place, and payloads submitted meanwhile were not counted at all).
        self.closed = True
        left = self._queue.qsize() + (in_flight is not None)
        left_bytes = self._queued_bytes + (in_flight or 0)
        left_records = self._queued_records + (in_flight_records if in_flight is not None else 0)
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        self._queued_bytes = self._queued_records = 0
        if left:
            self.dropped += left
            self.dropped_records += left_records
            records = f"; {left_records} records" if left_records else ""
            log.warning("OTLP export stopped with %d payload(s) (%d bytes%s) not delivered to %s within %g s",
                        left, left_bytes, records, shown_url(self.endpoint), bound)

    def _failure(self, problem: str, records: int) -> None:
        self.failed += 1
        self.failed_records += records
        now = time.monotonic()
        # A collector that is down fails every payload: one line per interval, not one per payload.
        if now - self._failure_logged_at >= DROP_LOG_INTERVAL_S:
            self._failure_logged_at = now
            log.warning("OTLP collector at %s %s (%d failed so far, %d records in them lost)",
                        shown_url(self.endpoint), problem, self.failed, self.failed_records)

    async def _run(self) -> None:
        aiohttp: Any = self._aiohttp
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                signal, body, records = await self._queue.get()
                self._queued_bytes -= len(body)
                self._queued_records -= records
                self._in_flight, self._in_flight_records = len(body), records
                url = collector_url(self.endpoint, signal)
                try:
                    # Redirects not followed: a 301/302/303 followed became a GET without the body, and its records
                    # were counted as exported.
                    async with session.post(url, data=body, allow_redirects=False,
                                            headers={"Content-Type": "application/json"}) as response:
                        if response.status >= 300:
                            problem = http_failure(response.status, response.headers.get("Location"))
                            self._failure(f"{problem} for {signal}", records)
                        else:
                            self.sent += 1
                            self.sent_records += records
                except TimeoutError as exc:
                    # The post's total timeout raises a TimeoutError with no message: the line ended at
                    # "unreachable: TimeoutError: " for a collector that accepted the connection and never answered.
                    detail = scrubbed(str(exc), url, self.endpoint)
                    self._failure(f"gave no answer within {self._timeout:g} s (timeout) for {signal}"
                                  + (f" ({type(exc).__name__}: {detail})" if detail else ""), records)
                except aiohttp.ClientError as exc:
                    self._failure(f"unreachable: {type(exc).__name__}: {scrubbed(str(exc), url, self.endpoint)}",
                                  records)
                except Exception as exc:
                    # Anything else is a failed export too, and the task goes on: a UnicodeError from a host IDNA
                    # cannot encode ended it for good, with nothing counted and health still healthy.
                    self._failure(f"failed: {type(exc).__name__}: {scrubbed(str(exc), url, self.endpoint)}",
                                  records)
                finally:
                    self._in_flight = None
                    self._queue.task_done()
