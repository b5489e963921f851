"""The observability stores count what their entries hold in memory, and the ingest queue's bound covers every frame
the module holds.

Before: each entry was charged its share of the frame's JSON bytes. A flood of log records of 200 attributes each
reported ``stored_bytes`` 67,102,272 (its 64 MiB bound) while the engine's RSS grew by 300 MiB: small attributes,
spans and metrics cost three to five times their JSON, an empty record 180 times. And the ingest loop kept the frame
it had stored, bytes and parsed form, until the next one was parsed: two parsed frames alive at once, the bytes of
one of them outside ``ingest_queue_bytes``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iii.wire import loads
from iii_engine.modules.base import InvocationContext
from iii_engine.modules.observability import module as observability_module
from iii_engine.modules.observability.module import OtelModule

# The estimate's allowed error either way: the stores' byte bounds are about real memory.
FACTOR = 1.5
RESOURCE = {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}},
                           {"key": "host.name", "value": {"stringValue": "web-1"}}]}


def _attrs(count: int, value: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"key": f"attribute.{j}", "value": value(j)} for j in range(count)]


def _logs(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceLogs": [{"resource": RESOURCE, "scopeLogs": [
        {"scope": {"name": "app", "version": "1.0"}, "logRecords": records}]}]}).encode()


def _spans(spans: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceSpans": [{"resource": RESOURCE, "scopeSpans": [
        {"scope": {"name": "app"}, "spans": spans}]}]}).encode()


def _metrics(metrics: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceMetrics": [{"resource": RESOURCE, "scopeMetrics": [
        {"scope": {"name": "app"}, "metrics": metrics}]}]}).encode()


def _span(i: int, **extra: Any) -> dict[str, Any]:
    return {"traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "call orders::create", "kind": 2,
            "startTimeUnixNano": "1796170817880771273", "endTimeUnixNano": "1796170817880772273",
            "attributes": [], "events": [], "links": [], "status": {"code": 1}, **extra}


# (signal, one frame of entries) per shape: the finder's (records of 200 small attributes), the usual small ones,
# empty records, a call's span, spans with attributes and events, metrics, nested and non-ASCII values
def _records_of_200_attributes(frame: int, count: int = 20) -> bytes:
    return _logs([{"body": {"stringValue": "x"}, "severityNumber": 9, "severityText": "INFO",
                   "timeUnixNano": str(frame * 1000 + i), "attributes": _attrs(200, lambda j: {"intValue": str(j)})}
                  for i in range(count)])


SHAPES: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "logs_200_int_attributes": ("LOGS", _records_of_200_attributes),
    "logs_small": ("LOGS", lambda f: _logs([
        {"body": {"stringValue": f"order {f}-{i} paid"}, "severityNumber": 9, "severityText": "INFO",
         "timeUnixNano": "1796170817880771273", "traceId": f"{i:032x}", "spanId": f"{i:016x}",
         "attributes": _attrs(2, lambda j: {"stringValue": f"value-{j}"})} for i in range(400)])),
    "logs_empty": ("LOGS", lambda f: _logs([{} for _ in range(500)])),
    "logs_nested_unicode": ("LOGS", lambda f: _logs([
        {"body": {"arrayValue": {"values": [{"intValue": str(k)} for k in range(50)]}},
         "attributes": _attrs(5, lambda j: {"arrayValue": {"values": [
             {"stringValue": "é" * 20}, {"intValue": str(10_000 + j)},
             {"kvlistValue": {"values": [{"key": "z", "value": {"doubleValue": 1.5}}]}}]}})}
        for i in range(100)])),
    "spans_usual": ("OTLP", lambda f: _spans([_span(f * 1000 + i) for i in range(400)])),
    "spans_attributes_events": ("OTLP", lambda f: _spans([_span(
        f * 1000 + i, parentSpanId="ab" * 8,
        attributes=_attrs(15, lambda j: {"stringValue": f"v{j}"}),
        events=[{"name": "retry", "timeUnixNano": str(1796170817880771273 + k),
                 "attributes": _attrs(2, lambda j: {"intValue": str(j)})} for k in range(5)])
        for i in range(100)])),
    "metrics_sums_histograms": ("MTRC", lambda f: _metrics([
        {"name": f"jobs.{i % 20}", "sum": {"isMonotonic": True, "dataPoints": [
            {"asInt": "4", "timeUnixNano": "1796170817880771273",
             "attributes": _attrs(2, lambda j: {"stringValue": f"v{j}"})} for _ in range(3)]}}
        if i % 2 else
        {"name": f"latency.{i % 20}", "histogram": {"dataPoints": [
            {"count": "10", "sum": 3.5, "bucketCounts": ["1", "2", "3", "4"], "explicitBounds": [0.1, 0.5, 1.0],
             "timeUnixNano": "1796170817880771273", "attributes": _attrs(1, lambda j: {"stringValue": "/a"})}]}}
        for i in range(200)])),
}

UNBOUNDED = {"enabled": True, "exporter": "memory", "logs_console_output": False, "logs_max_count": 10**6,
             "memory_max_spans": 10**6, "metrics_max_count": 10**6}


def _store(module: OtelModule, kind: str) -> Any:
    return {"LOGS": module.logs, "OTLP": module.spans, "MTRC": module.metrics}[kind]


@contextmanager
def _growth() -> Iterator[list[int]]:
    """The bytes Python allocated in the block and still holds after it (tracemalloc)."""
    grown = [0]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield grown
        gc.collect()
        grown[0] = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _flood(module: OtelModule, kind: str, bodies: list[bytes]) -> None:
    for body in bodies:
        frame = loads(body)  # in the block: the stored entries keep the parsed strings
        module._store_frame(kind, body, frame)
        del frame


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_store_counts_what_its_entries_hold_in_memory(shape: str) -> None:
    kind, frame = SHAPES[shape]
    module = OtelModule(None, UNBOUNDED)  # type: ignore[arg-type]
    bodies = [frame(f) for f in range(8)]
    with _growth() as grown:
        _flood(module, kind, bodies)
    store = _store(module, kind)
    assert store.evicted == 0
    # before: 0.24 (logs_small), 0.29 (spans_usual), 0.005 (logs_empty) of what they held
    assert grown[0] / FACTOR <= store.bytes <= grown[0] * FACTOR, (store.bytes, grown[0], store.bytes / grown[0])


def test_the_engine_s_own_log_entries_and_call_spans_are_counted_too() -> None:
    module = OtelModule(None, UNBOUNDED)  # type: ignore[arg-type]
    log_info = module._make_log("info")

    async def log_many() -> None:
        for i in range(2000):
            await log_info({"message": f"order {i} paid", "data": {"order": i * 1000, "tags": ["a", "b"]}},
                           InvocationContext())

    with _growth() as grown:
        asyncio.run(log_many())
    assert grown[0] / FACTOR <= module.logs.bytes <= grown[0] * FACTOR, (module.logs.bytes, grown[0])

    function_ids = [f"orders::step{i}" for i in range(10)]
    with _growth() as grown:
        for i in range(2000):
            call = module.call_started(function_ids[i % 10], None, builtin=True, worker_id="w-1")
            module.call_finished(call, None, builtin=True)
    assert module.spans is not None
    assert grown[0] / FACTOR <= module.spans.bytes <= grown[0] * FACTOR, (module.spans.bytes, grown[0])


def test_a_flood_holds_no_more_than_the_byte_bound() -> None:
    bound = 2 * 1024 * 1024
    module = OtelModule(None, {**UNBOUNDED, "logs_max_bytes": bound})  # type: ignore[arg-type]
    kind, frame = SHAPES["logs_200_int_attributes"]
    bodies = [frame(f) for f in range(25)]  # ~10 MiB held were nothing evicted
    with _growth() as grown:
        _flood(module, kind, bodies)
    assert module.logs.evicted > 0 and module.logs.bytes <= bound
    # before: 3.5 MiB held under the 2 MiB bound (0.56 of it counted)
    assert grown[0] <= bound * FACTOR, grown[0]


def _parsed_frames(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[Any]]:
    """Every frame the module parses from now on, weakly."""

    class Frame(dict[str, Any]):
        pass

    parsed: list[weakref.ref[Any]] = []

    def recording_loads(body: Any) -> Any:
        frame = Frame(loads(body))
        parsed.append(weakref.ref(frame))
        return frame

    monkeypatch.setattr(observability_module, "loads", recording_loads)
    return parsed


def _stored(module: OtelModule, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the module stored a frame: the ingest task runs on, without a pause, to its next await."""
    stored = asyncio.Event()
    store_frame = module._storing  # the ingest task stores a frame through it, in slices

    def storing(kind: str, body: bytes, frame: Any, slice_s: float | None,
                source: str | None = None) -> Generator[None, None, None]:
        yield from store_frame(kind, body, frame, slice_s, source)
        stored.set()

    monkeypatch.setattr(module, "_storing", storing)
    return stored


async def test_a_stored_frame_is_let_go_before_the_next_is_awaited(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = _parsed_frames(monkeypatch)
    module = OtelModule(None, UNBOUNDED)  # type: ignore[arg-type]
    stored = _stored(module, monkeypatch)
    task = asyncio.get_running_loop().create_task(module._ingest_loop())
    try:
        module.ingest("LOGS", SHAPES["logs_small"][1](0))
        await stored.wait()
        gc.collect()
        # before: the parsed frame stayed alive (the loop's local) until the next frame was parsed
        assert len(parsed) == 1 and parsed[0]() is None
        assert module._queued_bytes == 0
    finally:
        task.cancel()


async def test_the_frame_being_parsed_counts_against_ingest_queue_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _records_of_200_attributes(0, 40)
    assert len(body) > observability_module.OFFLOOP_PARSE_BYTES  # parsed in a thread, which the test holds
    module = OtelModule(None, {**UNBOUNDED, "ingest_queue_bytes": len(body) + 100})  # type: ignore[arg-type]
    entered, release = threading.Event(), threading.Event()

    def held_loads(raw: Any) -> Any:
        entered.set()
        release.wait(20)
        return loads(raw)

    monkeypatch.setattr(observability_module, "loads", held_loads)
    stored = _stored(module, monkeypatch)
    task = asyncio.get_running_loop().create_task(module._ingest_loop())
    try:
        module.ingest("LOGS", body)
        await asyncio.to_thread(entered.wait, 20)  # the frame left the queue and is being parsed
        module.ingest("LOGS", body)
        # before: accepted, the frame being parsed no longer counted (two frames held under a bound of one)
        assert module.dropped_frames == 1 and module._queue.qsize() == 0
        release.set()
        await stored.wait()
        assert module.ingested_frames == 1 and module._queued_bytes == 0
    finally:
        release.set()
        task.cancel()
