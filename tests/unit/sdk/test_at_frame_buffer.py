"""Attack A-T: telemetry frames are bounded in bytes: waiting for a sink (not only in count: a frame may be up to
MAX_FRAME_BYTES, so 1000 of them could be 4 GiB), and a metrics collection over the frame limit is split."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from iii.telemetry_exporters import (
    PREFIX_METRICS,
    PREFIX_SPANS,
    EngineMetricsExporter,
    SharedEngineConnection,
    serialize_metrics,
)


def test_buffered_frames_are_bounded_in_bytes_newest_kept(caplog: pytest.LogCaptureFixture) -> None:
    connection = SharedEngineConnection()
    payloads = [bytes([i]) * (3 * 1024 * 1024) for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="iii.telemetry_exporters"):
        for payload in payloads:
            connection.send_threadsafe(PREFIX_SPANS, payload)
    got: list[bytes] = []
    connection.attach(got.append)
    assert sum(len(frame) for frame in got) <= 16 * 1024 * 1024
    assert got == [PREFIX_SPANS + payload for payload in payloads[-5:]]
    assert connection._dropped == 5
    assert "telemetry buffer full" in caplog.text


def test_frames_bounced_by_a_detached_sink_count_against_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = SharedEngineConnection()
    monkeypatch.setattr(connection, "MAX_QUEUE", 3)
    connection._call_sink([b"a", b"b", b"c", b"d", b"e"])  # delivered while the sink was being detached
    got: list[bytes] = []
    connection.attach(got.append)
    assert got == [b"c", b"d", b"e"]
    assert connection._dropped == 2


def _points(body: bytes) -> list[tuple[str, str, str]]:
    """(scope, metric, the point's text) of every data point of a metrics request."""
    return [(sm["scope"]["name"], metric["name"], json.dumps(point, sort_keys=True))
            for rm in json.loads(body)["resourceMetrics"] for sm in rm["scopeMetrics"] for metric in sm["metrics"]
            for kind in ("sum", "histogram", "gauge") if kind in metric for point in metric[kind]["dataPoints"]]


def test_a_metrics_frame_over_the_limit_is_split_between_data_points() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("a").create_counter("calls")
    histogram = provider.get_meter("b", "1.0").create_histogram("ms")
    for i in range(300):
        counter.add(i, {"series": f"s{i}"})
        histogram.record(i / 3, {"series": f"s{i % 40}"})
    data = reader.get_metrics_data()
    frames: list[bytes] = []
    exporter = EngineMetricsExporter(SharedEngineConnection(frames.append))
    exporter.max_frame_bytes = 5_000
    assert exporter.export(data).name == "SUCCESS"
    whole = serialize_metrics(data)
    assert len(whole) > 10 * 5_000 and len(frames) > 10
    assert all(len(frame) <= 5_000 and frame.startswith(PREFIX_METRICS) for frame in frames)
    assert [point for frame in frames for point in _points(frame[4:])] == _points(whole)
