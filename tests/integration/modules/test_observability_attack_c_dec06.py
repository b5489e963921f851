"""Mends of an attack on the observability module (/tmp/atkC): metric names taken by one frame of made-up names,
clears that ignored the filter they were given, spans in a parent cycle shown nowhere, traceparents the SDKs refuse,
and a stalled collector's timeout logged with nothing after the colon."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.observability.exporter import OtlpForwarder
from tests.integration.modules.test_observability import engine_with
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the observability module")

_LOGGER = "iii_engine.modules.observability"


def gauges_frame(names: list[str], service: str) -> bytes:
    now = str(time.time_ns())
    metrics = [{"name": name, "gauge": {"dataPoints": [{"timeUnixNano": now, "asDouble": 1.0}]}} for name in names]
    return json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeMetrics": [{"scope": {"name": "s"}, "metrics": metrics}]}]}).encode()


async def test_a_frame_of_made_up_metric_names_does_not_keep_other_names_out(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before: 10,000 names in one frame filled max_names, and every other worker's new name was refused (0 stored,
    # no log line) until the squatter's entries aged out of metrics_retention_seconds (an hour).
    caplog.set_level(logging.WARNING, _LOGGER)
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        module.ingest("MTRC", gauges_frame([f"squat.{i}" for i in range(10_000)], "squatter"))
        module.ingest("MTRC", gauges_frame(["victim.jobs"], "victim"))
        await until(lambda: module.ingested_frames == 2, within=20)
        listed = await worker.result("engine::metrics::list", {"metric_name": "victim.jobs"})
        assert len(listed["sdk_metrics"]) == 1
        details = (await worker.result("engine::health::check", {}))["components"]["metrics"]["details"]
        assert details["refused_names"] == 0 and details["evicted_for_names"] == 1
        assert details["stored_metrics"] == 10_000
        squat = await worker.result("engine::metrics::list", {"metric_name": "squat.0"})
        assert squat["sdk_metrics"] == []  # the oldest name went
    lines = [r.getMessage() for r in caplog.records if "max_names" in r.getMessage()]
    assert lines and "1 entries of the services holding the most names evicted" in lines[0], lines


async def test_a_clear_given_a_field_is_refused_and_clears_nothing() -> None:
    # Before: {"trace_id": ...} and {"older_than_ms": ...} were read as no filter: everything was cleared.
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as worker:
        for message in ("keep 1", "keep 2"):
            await worker.result("engine::log::info", {"message": message})
        for function_id, data in (("engine::logs::clear", {"trace_id": "cd" * 16}),
                                  ("engine::traces::clear", {"trace_id": "cd" * 16, "older_than_ms": 60_000})):
            frame = await worker.call(function_id, data)
            assert frame["error"]["code"] == "deserialization_error", frame
            assert f"for {function_id}: unknown field `trace_id`, it takes no fields" in frame["error"]["message"]
        assert (await worker.result("engine::logs::list", {}))["total"] == 2
        assert (await worker.result("engine::traces::list", {"include_internal": True}))["total"] > 0
        assert await worker.result("engine::logs::clear", {}) == {"success": True}
        assert await worker.result("engine::traces::clear", None) == {"success": True}
        assert (await worker.result("engine::logs::list", {}))["total"] == 0


def _span(name: str, trace_id: str, span_id: str, parent: str | None) -> dict[str, Any]:
    now = time.time_ns()
    span: dict[str, Any] = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 1,
                            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000)}
    if parent is not None:
        span["parentSpanId"] = parent
    return span


def _names(nodes: list[dict[str, Any]]) -> list[Any]:
    return [[node["name"], _names(node["children"])] for node in nodes]


async def test_spans_in_a_parent_cycle_or_parented_to_themselves_are_shown_as_roots() -> None:
    # Before: stored and counted, but traces::tree answered roots [] and traces::list left them out.
    selfish, cycle = "7" * 32, "8" * 32
    spans = [_span("self-parent", selfish, "1" * 16, "1" * 16), _span("cycle-a", cycle, "a" * 16, "b" * 16),
             _span("cycle-b", cycle, "b" * 16, "a" * 16), _span("child-of-cycle", cycle, "c" * 16, "a" * 16),
             _span("orphan", cycle, "d" * 16, "e" * 16), _span("root", cycle, "f" * 16, None)]
    frame = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "x"},
                                                                                 "spans": spans}]}]}
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        module.ingest("OTLP", json.dumps(frame).encode())
        await until(lambda: module.ingested_frames == 1)
        tree = await worker.result("engine::traces::tree", {"trace_id": selfish})
        assert _names(tree["roots"]) == [["self-parent", []]] and tree["truncated"] is False
        tree = await worker.result("engine::traces::tree", {"trace_id": cycle})
        assert _names(tree["roots"]) == [["root", []], ["orphan", []],
                                         ["cycle-a", [["cycle-b", []], ["child-of-cycle", []]]]]
        for trace_id, roots in ((selfish, ["self-parent"]), (cycle, ["cycle-a", "orphan", "root"])):
            listed = await worker.result("engine::traces::list", {"trace_id": trace_id})
            assert sorted(span["name"] for span in listed["spans"]) == roots


@pytest.mark.parametrize("traceparent", [
    "ff-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
    "00-" + "AB" * 16 + "-" + "CD" * 8 + "-01",
    "00-" + "ab_" * 10 + "ab-" + "cd" * 8 + "-01",
    "00-+" + "a" * 31 + "-" + "cd" * 8 + "-01",
    "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01-extra",
])
async def test_a_traceparent_the_sdks_refuse_starts_a_new_trace(traceparent: str) -> None:
    # Before: int(x, 16) took these, and the engine's span was parented to a context the callee's SDK refused (it
    # started a trace of its own): one call, two traces.
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        async def answer(data: Any) -> dict[str, Any]:
            return {"ok": True}

        await worker.function("atkc::tp", answer)
        for sent in (traceparent, "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"):
            frame = await worker.call("atkc::tp", {}, traceparent=sent)
            assert frame.get("result") == {"ok": True}, frame
        await until(lambda: sum(s["name"] == "call atkc::tp" for s in module.spans.entries()) == 2)
        parents = [s["parent_span_id"] for s in module.spans.entries() if s["name"] == "call atkc::tp"]
        assert parents == [None, "cd" * 8]


async def test_a_stalled_collector_is_logged_as_no_answer_within_the_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before: "OTLP collector at ... unreachable: TimeoutError:  (1 failed so far ...)", nothing after the colon.
    caplog.set_level(logging.WARNING, _LOGGER)
    held: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, reads, never answers

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    forwarder = OtlpForwarder(f"http://127.0.0.1:{port}", timeout_s=0.3, stop_timeout_s=0.1)
    forwarder.start()
    try:
        forwarder.submit("logs", b"{}", 3)
        await until(lambda: forwarder.failed == 1)
    finally:
        await forwarder.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("OTLP collector at")]
    assert lines == [f"OTLP collector at http://127.0.0.1:{port} gave no answer within 0.3 s (timeout) for logs "
                     "(1 failed so far, 3 records in them lost)"], lines


def _logs_frame(service: str, body: str) -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": [{"severityNumber": 9, "body": {"stringValue": body}}]}]}]}).encode()


async def test_a_flooding_connection_gets_its_share_of_the_ingest_queue_not_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before: one queue for every connection: a flood filled it and the frames of every other worker were dropped
    # with the flood's (here 0 of the victim's 100; an SDK worker's 100 log records kept 36 in the attack).
    caplog.set_level(logging.WARNING, _LOGGER)
    async with engine_with({"ingest_queue_frames": 200, "logs_max_count": 10_000}) as engine, \
            ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        for i in range(100):  # no await: nothing is taken off the queue meanwhile
            for j in range(20):
                module.ingest("LOGS", _logs_frame("flooder", f"f{i}.{j}"), "w-flooder")
            module.ingest("LOGS", _logs_frame("victim", f"v{i}"), "w-victim")
        await until(lambda: not module._queue.qsize() and not module._source_queued)
        kept = [entry["service_name"] for entry in module.logs.entries()]
        assert kept.count("victim") == 100
        assert kept.count("flooder") == 100  # ingest_queue_frames over the two connections sending
        assert (await worker.result("engine::health::check", {}))["components"]["telemetry"]["details"][
            "dropped_frames"] == 2000 - 100
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines and "from worker w-flooder dropped (past its share of the ingest queue (100 frames" in lines[0], lines
