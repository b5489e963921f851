"""iii.telemetry with the real OpenTelemetry SDK, exporting into captured frames."""

from __future__ import annotations

import asyncio
import http.server
import os
import pathlib
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from iii import telemetry
from iii.telemetry_types import OtelConfig

from .conftest import Frames

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_with_span_exports_an_otlp_frame(frames: Frames) -> None:
    seen: dict[str, Any] = {}

    async def work(span: Any) -> str:
        span.set_attribute("job.size", 3)
        seen["trace"], seen["span"] = telemetry.current_trace_id(), telemetry.current_span_id()
        return "done"

    assert await telemetry.with_span("job", work) == "done"
    assert telemetry.force_flush()
    [span] = [s for s in frames.spans() if s["name"] == "job"]
    assert span["traceId"] == seen["trace"] and len(seen["trace"]) == 32
    assert span["spanId"] == seen["span"] and len(seen["span"]) == 16
    assert span["kind"] == 1  # OTLP SPAN_KIND_INTERNAL
    assert span["status"]["code"] == 1  # OK
    assert {"key": "job.size", "value": {"intValue": 3}} in span["attributes"]
    resource = frames.bodies(b"OTLP")[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "periph-tests"}} in resource


async def test_with_span_marks_errors(frames: Frames) -> None:
    async def boom(span: Any) -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await telemetry.with_span("failing", boom)
    telemetry.force_flush()
    [span] = [s for s in frames.spans() if s["name"] == "failing"]
    assert span["status"]["code"] == 2 and "broken" in span["status"]["message"]
    assert any(event["name"] == "exception" for event in span["events"])


async def test_with_span_continues_a_remote_traceparent(frames: Frames) -> None:
    async def work(span: Any) -> str | None:
        return telemetry.current_trace_id()

    kind = trace.SpanKind.SERVER
    assert await telemetry.with_span("child", work, traceparent=TRACEPARENT, kind=kind) == TRACEPARENT[3:35]
    telemetry.force_flush()
    [span] = [s for s in frames.spans() if s["name"] == "child"]
    assert span["parentSpanId"] == "b7ad6b7169203331"
    assert span["kind"] == 2  # OTLP SPAN_KIND_SERVER


def test_traceparent_round_trip(frames: Frames) -> None:
    tracer = telemetry.get_tracer()
    with tracer.start_as_current_span("outer") as outer:
        header = telemetry.inject_traceparent()
        expected = outer.get_span_context()
    assert header is not None
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (newer SDKs also set the "random" bit)
    assert trace_id == format(expected.trace_id, "032x") and span_id == format(expected.span_id, "016x")
    restored = trace.get_current_span(telemetry.extract_traceparent(header)).get_span_context()
    assert (restored.trace_id, restored.span_id, restored.is_remote) == (expected.trace_id, expected.span_id, True)
    assert telemetry.inject_traceparent() is None  # no active span any more


def test_baggage_round_trip() -> None:
    token = otel_context.attach(telemetry.set_baggage_entry("user", "ada"))
    try:
        token2 = otel_context.attach(telemetry.set_baggage_entry("tenant", "acme"))
        try:
            header = telemetry.inject_baggage()
            assert header is not None
            assert sorted(header.split(",")) == ["tenant=acme", "user=ada"]
            assert telemetry.get_baggage_entry("user") == "ada"
            assert telemetry.get_all_baggage() == {"user": "ada", "tenant": "acme"}
            without = telemetry.remove_baggage_entry("user")
            assert baggage.get_all(without) == {"tenant": "acme"}
        finally:
            otel_context.detach(token2)
    finally:
        otel_context.detach(token)
    assert telemetry.get_baggage_entry("user") is None
    restored = telemetry.extract_baggage(header)
    assert dict(baggage.get_all(restored)) == {"user": "ada", "tenant": "acme"}
    both = telemetry.extract_context(TRACEPARENT, "k=v")
    assert baggage.get_baggage("k", both) == "v"
    assert format(trace.get_current_span(both).get_span_context().trace_id, "032x") == TRACEPARENT[3:35]
    assert telemetry.extract_context() is not None


def test_metrics_reach_the_sink(frames: Frames) -> None:
    counter = telemetry.get_meter().create_counter("jobs.done", unit="1", description="finished jobs")
    counter.add(3, {"queue": "q"})
    telemetry.force_flush()
    metric = frames.metrics()["jobs.done"]
    assert metric["unit"] == "1" and metric["description"] == "finished jobs"
    [point] = metric["sum"]["dataPoints"]
    assert point["asInt"] == "3"
    assert point["attributes"] == [{"key": "queue", "value": {"stringValue": "q"}}]
    assert metric["sum"]["isMonotonic"] is True


@pytest.mark.parametrize("value", ["false", "0", "no", "OFF"])
def test_otel_enabled_env_disables(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    telemetry.shutdown_otel()
    monkeypatch.setenv("OTEL_ENABLED", value)
    telemetry.init_otel(frame_sink=lambda frame: None)
    assert not telemetry.is_initialized()
    assert telemetry.get_tracer() is None and telemetry.get_meter() is None and telemetry.get_logger() is None


def test_explicit_config_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry.shutdown_otel()
    monkeypatch.setenv("OTEL_ENABLED", "false")
    telemetry.init_otel(OtelConfig(enabled=True, fetch_instrumentation_enabled=False))
    try:
        assert telemetry.is_initialized()
    finally:
        telemetry.shutdown_otel()
    assert not telemetry.is_initialized()


def test_reinit_after_shutdown_uses_the_new_sink() -> None:
    first: list[bytes] = []
    second = Frames()
    config = OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False)
    telemetry.shutdown_otel()
    telemetry.init_otel(config, frame_sink=first.append)
    telemetry.shutdown_otel()
    telemetry.init_otel(config, frame_sink=second.append)
    try:
        # The process-wide provider (what instrumentation libraries use) follows the re-initialisation.
        with trace.get_tracer("someone-else").start_as_current_span("global"):
            pass
        telemetry.force_flush()
        assert [s["name"] for s in second.spans()] == ["global"]
        assert not any(frame.startswith(b"OTLP") for frame in first)
    finally:
        telemetry.shutdown_otel()


def test_frames_wait_for_a_sink() -> None:
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False))
    try:
        with telemetry.get_tracer().start_as_current_span("early"):
            pass
        telemetry.force_flush()
        late = Frames()
        telemetry.attach_frame_sink(late.append)
        assert [s["name"] for s in late.spans()] == ["early"]
    finally:
        telemetry.shutdown_otel()


async def test_frames_are_delivered_on_the_loop_thread() -> None:
    loop = asyncio.get_running_loop()
    delivered = asyncio.Event()
    threads: list[int] = []

    def sink(frame: bytes) -> None:
        threads.append(threading.get_ident())
        delivered.set()

    telemetry.shutdown_otel()
    telemetry.init_otel(
        OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False), loop, frame_sink=sink
    )
    try:
        with telemetry.get_tracer().start_as_current_span("threaded"):
            pass
        # force_flush exports on OpenTelemetry's worker thread; the frame must still arrive on ours.
        await asyncio.to_thread(telemetry.force_flush)
        await asyncio.wait_for(delivered.wait(), 5)
        assert threads and set(threads) == {threading.get_ident()}
    finally:
        await telemetry.shutdown_otel_async()
    assert not telemetry.is_initialized()


class _Handler(http.server.BaseHTTPRequestHandler):
    seen_traceparent: str | None = None

    def do_GET(self) -> None:
        type(self).seen_traceparent = self.headers.get("traceparent")
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_urllib_requests_are_traced(http_server: str) -> None:
    captured = Frames()
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, metrics_enabled=False), frame_sink=captured.append)
    try:
        with urllib.request.urlopen(f"{http_server}/ping?x=1", timeout=5) as response:
            assert response.status == 204
        telemetry.force_flush()
    finally:
        telemetry.shutdown_otel()
    [span] = [s for s in captured.spans() if s["name"] == "GET /ping"]
    assert span["kind"] == 3  # OTLP SPAN_KIND_CLIENT
    assert {"key": "http.response.status_code", "value": {"intValue": 204}} in span["attributes"]
    assert _Handler.seen_traceparent is not None
    assert _Handler.seen_traceparent.split("-")[1:3] == [span["traceId"], span["spanId"]]
    assert urllib.request.OpenerDirector.open.__name__ == "open"  # unpatched on shutdown


_NO_OTEL = r"""
import asyncio, importlib.abc, logging, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"blocked {name}")
        return None

sys.meta_path.insert(0, Block())
logging.basicConfig(level=logging.INFO, format="%(name)s:%(message)s", stream=sys.stdout)
from iii import telemetry
from iii.logger import Logger, is_initialized
try:
    telemetry.init_otel()
except ImportError as exc:
    print("init:ImportError", "iii-toolkit[otel]" in str(exc))
print("query", telemetry.current_trace_id(), telemetry.current_span_id(), telemetry.inject_traceparent(),
      telemetry.inject_baggage(), telemetry.extract_context("x"), telemetry.get_all_baggage(),
      telemetry.get_baggage_entry("k"), is_initialized())
async def work(span):
    return span.is_recording()
print("with_span", asyncio.run(telemetry.with_span("x", work)))
Logger(service_name="svc").info("fallback works")
"""


def test_works_without_opentelemetry() -> None:
    root = pathlib.Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", _NO_OTEL], capture_output=True, text=True, timeout=20, check=True, cwd=root, env=env
    )
    lines = out.stdout.splitlines()
    assert "init:ImportError True" in lines
    assert "query None None None None None {} None False" in lines
    assert "with_span False" in lines
    assert "iii.logger:[svc] fallback works" in lines
