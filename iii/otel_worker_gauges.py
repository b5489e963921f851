"""Observable OpenTelemetry gauges ``iii.worker.*`` describing the worker process, tagged ``worker.id``.

Gauges: ``iii.worker.cpu.percent``, ``iii.worker.cpu.user_micros``, ``iii.worker.cpu.system_micros``,
``iii.worker.memory.rss``, ``iii.worker.memory.vms``, ``iii.worker.memory.heap_used``,
``iii.worker.memory.heap_total``, ``iii.worker.memory.external``, ``iii.worker.uptime_seconds`` and (ours)
``iii.worker.event_loop.lag``. One snapshot serves every gauge of an export cycle.

The reference registers them with ``Meter.add_batch_observable_callback``, which the OpenTelemetry Python API
does not have; ours gives each gauge its own callback. Since OpenTelemetry cannot remove an instrument's
callback, :func:`stop_worker_gauges` makes the callbacks of the stopped registration observe nothing.

Example:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> reader = InMemoryMetricReader()
    >>> register_worker_gauges(MeterProvider(metric_readers=[reader]).get_meter("w"), "worker-1")
    >>> names = {m.name for rm in reader.get_metrics_data().resource_metrics
    ...          for sm in rm.scope_metrics for m in sm.metrics}
    >>> "iii.worker.memory.rss" in names
    True
    >>> stop_worker_gauges()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

from .worker_metrics import EventLoopLagMonitor, WorkerMetrics, WorkerMetricsCollector

__all__ = ["GAUGES", "register_worker_gauges", "stop_worker_gauges"]

# (name, description, unit, how to read it from a snapshot)
GAUGES: Final[tuple[tuple[str, str, str, Callable[[WorkerMetrics], float]], ...]] = (
    ("iii.worker.cpu.percent", "Worker CPU usage percentage", "%", lambda m: m.cpu_percent),
    ("iii.worker.memory.rss", "Worker resident set size in bytes", "bytes", lambda m: m.memory_rss),
    ("iii.worker.memory.vms", "Worker virtual memory in bytes", "bytes", lambda m: m.memory_vms),
    ("iii.worker.uptime_seconds", "Worker uptime in seconds", "s", lambda m: m.uptime_seconds),
    ("iii.worker.memory.heap_used", "Worker heap memory used in bytes", "bytes", lambda m: m.memory_heap_used),
    ("iii.worker.memory.heap_total", "Worker total heap memory in bytes", "bytes", lambda m: m.memory_heap_total),
    ("iii.worker.memory.external", "Worker external memory in bytes", "bytes", lambda m: m.memory_external),
    ("iii.worker.cpu.user_micros", "Worker CPU user time in microseconds", "us", lambda m: m.cpu_user_micros),
    ("iii.worker.cpu.system_micros", "Worker CPU system time in microseconds", "us", lambda m: m.cpu_system_micros),
    ("iii.worker.event_loop.lag", "Worker event loop lag in milliseconds", "ms", lambda m: m.event_loop_lag_ms),
)


class _Registration:
    """One ``register_worker_gauges`` call: its collector, attributes and optional lag monitor."""

    def __init__(self, attributes: dict[str, str], monitor: EventLoopLagMonitor | None) -> None:
        self.collector = WorkerMetricsCollector(monitor)
        self.attributes = attributes
        self.monitor = monitor
        self.loop: asyncio.AbstractEventLoop | None = None


_lock = threading.Lock()
_active: _Registration | None = None


def _callback(registration: _Registration, read: Callable[[WorkerMetrics], float]) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def observe(_options: Any) -> Iterable[Any]:
        if _active is not registration:
            return []
        return [Observation(read(registration.collector.collect_cached()), registration.attributes)]

    return observe


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def register_worker_gauges(
    meter: Any,
    worker_id: str,
    worker_name: str | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Create the ``iii.worker.*`` observable gauges on ``meter``; a no-op while a registration is active.

    ``loop`` (ours; default: the running loop, if any) is the event loop whose lag is measured.
    """
    global _active
    with _lock:
        if _active is not None:
            return
        attributes = {"worker.id": worker_id}
        if worker_name:
            attributes["worker.name"] = worker_name
        target = loop or _running_loop()
        monitor = EventLoopLagMonitor() if target is not None else None
        registration = _Registration(attributes, monitor)
        for name, description, unit, read in GAUGES:
            meter.create_observable_gauge(
                name=name, callbacks=[_callback(registration, read)], unit=unit, description=description
            )
        _active = registration
    if monitor is not None and target is not None:
        registration.loop = target
        _on_loop(target, lambda: monitor.start(target))


def _on_loop(loop: asyncio.AbstractEventLoop, action: Callable[[], None]) -> None:
    # Timer handles belong to their loop's thread.
    if _running_loop() is loop:
        action()
        return
    try:
        loop.call_soon_threadsafe(action)
    except RuntimeError:  # loop closed: nothing left to start or stop
        pass


def stop_worker_gauges() -> None:
    """Stop observing (the gauges then report nothing) and stop the lag monitor; registering works again."""
    global _active
    with _lock:
        registration, _active = _active, None
    if registration is not None and registration.monitor is not None and registration.loop is not None:
        _on_loop(registration.loop, registration.monitor.stop)
