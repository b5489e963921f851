"""iii.worker_metrics and iii.otel_worker_gauges with a real MeterProvider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from iii.otel_worker_gauges import GAUGES, register_worker_gauges, stop_worker_gauges
from iii.worker_metrics import EventLoopLagMonitor, WorkerMetricsCollector


def _burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_snapshot_values_are_plausible() -> None:
    collector = WorkerMetricsCollector()
    before = collector.collect()
    _burn_cpu(0.2)
    after = collector.collect()
    assert after.memory_rss > 1_000_000 and after.memory_vms >= after.memory_rss
    # os.times() counts in clock ticks (10 ms) and is split between user and system by sampling: a wide margin,
    # or a loaded machine's rounding fails the test (seen once)
    used = (after.cpu_user_micros + after.cpu_system_micros) - (before.cpu_user_micros + before.cpu_system_micros)
    assert used >= 100_000
    assert 0.0 < after.cpu_percent <= 100.0
    assert after.uptime_seconds > before.uptime_seconds >= 0
    assert after.runtime == "python" and after.event_loop_lag_ms == 0.0


def test_cache_serves_one_snapshot_per_ttl() -> None:
    collector = WorkerMetricsCollector()
    first = collector.collect_cached()
    assert collector.collect_cached() is first
    collector.CACHE_TTL_SECONDS = 0.0
    assert collector.collect_cached() is not first


async def test_lag_monitor_sees_a_blocked_loop() -> None:
    monitor = EventLoopLagMonitor(interval=0.01)
    monitor.start()
    try:
        time.sleep(0.15)  # noqa: ASYNC251 - blocking the loop on purpose: this is the lag being measured
        for _ in range(200):
            if monitor.samples:
                break
            await asyncio.sleep(0.005)
        # max_lag_ms, not lag_ms: on a loaded machine the next sample (10 ms on) may run before this task resumes
        assert monitor.max_lag_ms >= 100
        assert WorkerMetricsCollector(monitor).collect().event_loop_lag_ms == monitor.lag_ms
        assert monitor.take_max() >= 100 and monitor.max_lag_ms == 0.0
    finally:
        monitor.stop()
    with pytest.raises(ValueError, match="interval must be positive"):
        EventLoopLagMonitor(interval=0)


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: list(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    stop_worker_gauges()
    yield InMemoryMetricReader()
    stop_worker_gauges()


def test_gauges_are_tagged_and_stop(reader: InMemoryMetricReader) -> None:
    meter = MeterProvider(metric_readers=[reader]).get_meter("worker")
    register_worker_gauges(meter, "w-1", "billing")
    register_worker_gauges(meter, "w-2")  # second call while active: no-op
    points = _points(reader)
    assert set(points) == {name for name, *_ in GAUGES}
    for name, series in points.items():
        [point] = series
        assert dict(point.attributes) == {"worker.id": "w-1", "worker.name": "billing"}, name
    assert points["iii.worker.memory.rss"][0].value > 0
    stop_worker_gauges()
    assert all(not series for series in _points(reader).values())


async def test_registering_on_a_loop_measures_its_lag(reader: InMemoryMetricReader) -> None:
    meter = MeterProvider(metric_readers=[reader]).get_meter("worker")
    register_worker_gauges(meter, "w-loop")
    [lag] = _points(reader)["iii.worker.event_loop.lag"]
    assert lag.value >= 0.0 and dict(lag.attributes) == {"worker.id": "w-loop"}
