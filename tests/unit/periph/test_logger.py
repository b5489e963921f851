"""iii.logger.Logger: OpenTelemetry log records correlated with spans, stdlib fallback otherwise."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from iii import telemetry
from iii.logger import Logger, is_initialized

from .conftest import Frames


def _attrs(record: dict[str, Any]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in record["attributes"]}


def test_record_carries_the_active_span(frames: Frames) -> None:
    assert is_initialized()
    with telemetry.get_tracer().start_as_current_span("handler") as span:
        Logger(service_name="billing").info("order processed", {"order_id": "ord_1", "amount": 49.5})
        context = span.get_span_context()
    telemetry.force_flush()
    [record] = frames.logs()
    assert record["traceId"] == format(context.trace_id, "032x")
    assert record["spanId"] == format(context.span_id, "016x")
    assert (record["severityNumber"], record["severityText"]) == (9, "INFO")
    assert record["body"] == {"stringValue": "order processed"}
    attrs = _attrs(record)
    assert attrs["service.name"] == {"stringValue": "billing"}
    assert attrs["log.data"] == {
        "kvlistValue": {
            "values": [
                {"key": "order_id", "value": {"stringValue": "ord_1"}},
                {"key": "amount", "value": {"doubleValue": 49.5}},
            ]
        }
    }
    scope = frames.bodies(b"LOGS")[0]["resourceLogs"][0]["scopeLogs"][0]["scope"]
    assert scope["name"] == "iii.logger"


@pytest.mark.parametrize(("method", "number", "text"), [("debug", 5, "DEBUG"), ("warn", 13, "WARN"),
                                                         ("error", 17, "ERROR")])
def test_severities(frames: Frames, method: str, number: int, text: str) -> None:
    getattr(Logger(), method)("message")
    telemetry.force_flush()
    [record] = frames.logs()
    assert (record["severityNumber"], record["severityText"]) == (number, text)
    assert "traceId" not in record  # no active span, no ids given
    assert "log.data" not in _attrs(record)


def test_explicit_ids_win_over_the_active_span(frames: Frames) -> None:
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with telemetry.get_tracer().start_as_current_span("ignored"):
        Logger(trace_id=trace_id, span_id=span_id).warn("pinned", [1, "two", {"three": 3}, object])
    telemetry.force_flush()
    [record] = frames.logs()
    assert (record["traceId"], record["spanId"]) == (trace_id, span_id)
    values = _attrs(record)["log.data"]["arrayValue"]["values"]
    assert values[:2] == [{"intValue": 1}, {"stringValue": "two"}]
    assert values[3]["stringValue"].startswith("<class")  # non-JSON values are stringified, not dropped


def test_falls_back_to_logging_when_not_initialised(caplog: pytest.LogCaptureFixture) -> None:
    telemetry.shutdown_otel()
    assert not is_initialized()
    with caplog.at_level(logging.DEBUG, logger="iii.logger"):
        Logger(service_name="svc").error("disk full", {"free": 0})
        Logger().debug("details")
    first, second = caplog.records
    assert (first.levelno, first.getMessage()) == (logging.ERROR, "[svc] disk full")
    assert first.__dict__["data"] == {"free": 0}
    assert (second.levelno, second.getMessage()) == (logging.DEBUG, "[] details")
