"""iii.telemetry_exporters with real OpenTelemetry SDK pipelines and a list sink."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind

from iii.telemetry_exporters import (
    EngineLogExporter,
    EngineMetricsExporter,
    EngineSpanExporter,
    SharedEngineConnection,
)
from iii.wire import Telemetry, decode

RESOURCE = Resource.create({"service.name": "exporter-tests"})


def _parse(frame: bytes, prefix: bytes) -> dict[str, Any]:
    assert frame[:4] == prefix
    decoded = decode(frame)  # the engine's codec recognises it as telemetry
    assert isinstance(decoded, Telemetry)
    body: dict[str, Any] = json.loads(frame[4:])
    return body


def test_span_frames() -> None:
    frames: list[bytes] = []
    provider = TracerProvider(resource=RESOURCE)
    exporter = EngineSpanExporter(SharedEngineConnection(frames.append))
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
    tracer = provider.get_tracer("scope-a", "1.2")
    with tracer.start_as_current_span("parent") as parent:
        link = Link(parent.get_span_context(), {"why": "test"})
        with tracer.start_as_current_span(
            "child", kind=SpanKind.CLIENT, links=[link],
            attributes={"b": True, "i": 7, "f": 1.5, "s": "x", "l": ["a", "b"]},
        ) as child:
            child.add_event("step", {"n": 1})
    provider.shutdown()
    child_body, parent_body = (_parse(frame, b"OTLP") for frame in frames)
    [resource_spans] = child_body["resourceSpans"]
    service = {"key": "service.name", "value": {"stringValue": "exporter-tests"}}
    assert service in resource_spans["resource"]["attributes"]
    [scope_spans] = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "scope-a", "version": "1.2"}
    [span] = scope_spans["spans"]
    parent_span = parent_body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["parentSpanId"] == parent_span["spanId"] and "parentSpanId" not in parent_span
    assert span["traceId"] == parent_span["traceId"]
    assert span["kind"] == 3 and parent_span["kind"] == 1
    assert span["attributes"] == [
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": 7}},
        {"key": "f", "value": {"doubleValue": 1.5}},
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "l", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}},
    ]
    assert span["events"][0]["name"] == "step" and span["events"][0]["attributes"][0]["key"] == "n"
    assert span["links"][0]["spanId"] == parent_span["spanId"]
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0


def test_log_frames() -> None:
    frames: list[bytes] = []
    provider = LoggerProvider(resource=RESOURCE)
    exporter = EngineLogExporter(SharedEngineConnection(frames.append))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))  # type: ignore[arg-type]
    provider.get_logger("scope-l").emit(body="plain", attributes={"k": "v"})
    provider.shutdown()
    body = _parse(frames[0], b"LOGS")
    [scope_logs] = body["resourceLogs"][0]["scopeLogs"]
    assert scope_logs["scope"]["name"] == "scope-l"
    [record] = scope_logs["logRecords"]
    assert record["body"] == {"stringValue": "plain"}
    assert record["attributes"] == [{"key": "k", "value": {"stringValue": "v"}}]
    assert "traceId" not in record and int(record["observedTimeUnixNano"]) > 0


def test_metric_frames() -> None:
    frames: list[bytes] = []
    reader = PeriodicExportingMetricReader(
        EngineMetricsExporter(SharedEngineConnection(frames.append)),  # type: ignore[arg-type]
        export_interval_millis=3_600_000,
    )
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("scope-m")
    meter.create_histogram("latency", unit="ms").record(12.5)
    meter.create_up_down_counter("inflight").add(-2)
    meter.create_gauge("temperature").set(21.5)
    reader.force_flush()
    provider.shutdown()
    body = _parse(frames[0], b"MTRC")
    metrics = {m["name"]: m for m in body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]}
    histogram = metrics["latency"]["histogram"]
    [point] = histogram["dataPoints"]
    assert (point["count"], point["sum"], point["min"], point["max"]) == ("1", 12.5, 12.5, 12.5)
    assert len(point["bucketCounts"]) == len(point["explicitBounds"]) + 1
    assert histogram["aggregationTemporality"] == 2  # CUMULATIVE
    assert metrics["inflight"]["sum"]["isMonotonic"] is False
    assert metrics["inflight"]["sum"]["dataPoints"][0]["asInt"] == "-2"
    assert metrics["temperature"]["gauge"]["dataPoints"][0]["asDouble"] == 21.5


def test_buffer_is_bounded_and_flushed_in_order() -> None:
    class Small(SharedEngineConnection):
        MAX_QUEUE = 3

    connection = Small()
    for n in range(5):
        connection.send_threadsafe(b"LOGS", str(n).encode())
    got: list[bytes] = []
    connection.attach(got.append)
    assert got == [b"LOGS2", b"LOGS3", b"LOGS4"]
    connection.attach(None)
    connection.send_threadsafe(b"OTLP", b"x")
    assert got == [b"LOGS2", b"LOGS3", b"LOGS4"]
    connection.attach(got.append)
    assert got[-1] == b"OTLPx"


def test_a_failing_sink_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    def sink(frame: bytes) -> None:
        raise OSError("socket gone")

    SharedEngineConnection(sink).send_threadsafe(b"OTLP", b"{}")
    assert "telemetry sink failed" in caplog.text


def test_reference_style_url_constructor_buffers() -> None:
    connection = SharedEngineConnection("ws://localhost:49134")
    assert connection.url == "ws://localhost:49134" and connection.sink is None
    connection.send_threadsafe(b"MTRC", b"{}")
    got: list[bytes] = []
    connection.attach(got.append)
    assert got == [b"MTRC{}"]


async def test_started_connection_delivers_on_the_loop_thread() -> None:
    arrived = asyncio.Event()
    threads: list[int] = []

    def sink(frame: bytes) -> None:
        threads.append(threading.get_ident())
        arrived.set()

    connection = SharedEngineConnection(sink)
    connection.start(asyncio.get_running_loop())
    await asyncio.to_thread(connection.send_threadsafe, b"OTLP", b"{}")
    await asyncio.wait_for(arrived.wait(), 5)
    assert threads == [threading.get_ident()]
    await connection.shutdown()
    assert connection.sink is None
