"""A telemetry frame must be an export request (a JSON object) whose ids are OTLP/JSON ids: 32 hex digits for a
trace id, 16 for a span id. Anything else is refused whole and counted in ``malformed_frames``, the warning naming
what was wrong.

Before: ``OTLPnull`` (or ``LOGS[]``, ``MTRC5``) was counted in ``ingested_frames`` holding nothing, and a span whose
``traceId`` was ``"t"`` (or a megabyte of text) was stored and listed as is.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.observability.otlp import TelemetryFormatError, logs_from_otlp, spans_from_otlp
from tests.integration.modules.test_observability import engine_with, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")

TRACE, SPAN = "ab" * 16, "cd" * 8


def spans(**fields: Any) -> bytes:
    span = {"traceId": TRACE, "spanId": SPAN, "name": "shape", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            **fields}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def logs(**fields: Any) -> bytes:
    record = {"body": {"stringValue": "shape"}, **fields}
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()


REFUSED = [
    b"OTLPnull", b"LOGSnull", b"MTRCnull", b"OTLP[]", b'LOGS"x"', b"MTRC5", b"OTLPgarbage",
    b"OTLP" + spans(traceId="ab" * 15),  # 30 digits
    b"OTLP" + spans(traceId="ab" * 17),  # 34
    b"OTLP" + spans(traceId="x" * 32),  # not hex
    b"OTLP" + spans(spanId="cd" * 9),
    b"OTLP" + spans(spanId="t"),
    b"OTLP" + spans(parentSpanId="ef" * 9),
    b"OTLP" + spans(links=[{"traceId": "ab", "spanId": SPAN}]),
    b"LOGS" + logs(traceId="ab" * 8),
    b"LOGS" + logs(spanId="cd" * 16),
]
KEPT = [
    b"OTLP" + spans(parentSpanId="", name="kept-1"),
    b"OTLP" + spans(traceId="AB" * 16, parentSpanId="EF" * 8, name="kept-2"),  # upper case: stored lower-cased
    b"LOGS" + logs(traceId="0" * 32, spanId="0" * 16),  # what OTLP sends for "none"
    b"LOGS" + logs(traceId=TRACE, spanId=SPAN),
    b"OTLP{}",  # an empty request is a request
]


async def test_frames_that_are_not_requests_or_hold_malformed_ids_are_refused_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    async with engine_with({"enabled": True, "exporter": "memory", "logs_console_output": False}) as engine, \
            ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        assert worker._ws is not None
        with caplog.at_level(logging.WARNING, logger="iii_engine.modules.observability.module"):
            await worker._ws.send(REFUSED[0])

            async def counted(n: int) -> dict[str, Any] | None:
                health = await worker.result("engine::health::check", {})
                details: dict[str, Any] = health["components"]["telemetry"]["details"]
                return details if details["ingested_frames"] + details["malformed_frames"] == n else None

            first = await eventually(lambda: counted(1))
            for frame in REFUSED[1:] + KEPT:
                await worker._ws.send(frame)
            details = await eventually(lambda: counted(len(REFUSED) + len(KEPT)))
        # before: ingested 1, malformed 0 for OTLPnull; then ingested 20, malformed 1 (only "garbage" refused)
        assert (first["ingested_frames"], first["malformed_frames"]) == (0, 1)
        assert (details["ingested_frames"], details["malformed_frames"]) == (len(KEPT), len(REFUSED))
        said = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(said) == 1, said  # rate-limited: one line per interval
        assert "must be a JSON object (an export request), got null" in said[0]
        stored = {s["name"]: s for s in module.spans.entries() if not s["name"].startswith("call ")}
        assert sorted(stored) == ["kept-1", "kept-2"]
        assert (stored["kept-2"]["trace_id"], stored["kept-2"]["parent_span_id"]) == (TRACE, "ef" * 8)
        assert stored["kept-1"]["parent_span_id"] is None
        assert [(e["trace_id"], e["span_id"]) for e in module.logs.entries()] == [(None, None), (TRACE, SPAN)]


@pytest.mark.parametrize(("frame", "named"), [
    (spans(traceId="ab" * 15), "a span whose traceId is not 32 hex digits: 'ababab"),
    (spans(spanId="t"), "a span whose spanId is not 16 hex digits: 't'"),
    (spans(parentSpanId=5), "a span without a string 'parentSpanId'"),
    (spans(links=[{"spanId": "cd"}]), "a span link whose spanId is not 16 hex digits"),
    (logs(traceId="ab" * 8), "a log record whose traceId is not 32 hex digits"),
])
def test_the_refusal_names_the_field(frame: bytes, named: str) -> None:
    convert = spans_from_otlp if b"resourceSpans" in frame else logs_from_otlp
    with pytest.raises(TelemetryFormatError, match="^" + named.replace("(", r"\(")):
        convert(json.loads(frame))
