"""A ``Logger`` record's nested data is cut to text early enough that its OTLP-JSON always fits the wire's
128 levels (it was cut past 32 levels, and records nested 30 to 32 deep were dropped by the exporter whole)."""

from __future__ import annotations

from typing import Any

import pytest

from iii.logger import _MAX_DEPTH, Logger
from iii.telemetry_exporters import serialize_logs
from iii.wire import loads

pytest.importorskip("opentelemetry.sdk")


def nested(depth: int, kind: type = dict) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value} if kind is dict else [value]
    return value


def data_of(frame: Any) -> Any:
    [attribute] = [a for a in frame["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"]
                   if a["key"] == "log.data"]
    return attribute["value"]


def leaf(value: Any) -> str:
    while "stringValue" not in value:
        inner = value.get("kvlistValue") or value["arrayValue"]
        value = inner["values"][0]
        value = value.get("value", value)
    return str(value["stringValue"])


@pytest.mark.parametrize("kind", [dict, list])
@pytest.mark.parametrize("depth", [1, _MAX_DEPTH - 1, _MAX_DEPTH, _MAX_DEPTH + 1, 30, 32, 33, 200])
def test_any_record_the_logger_accepts_fits_the_wire(depth: int, kind: type) -> None:
    record = Logger(service_name="svc")._record("info", "nested", nested(depth, kind))
    frame = loads(serialize_logs([record]))  # raised "JSON nested deeper than 128 levels" from 30 levels on
    expected = "leaf" if depth <= _MAX_DEPTH else f"<nested deeper than {_MAX_DEPTH} levels>"
    assert leaf(data_of(frame)) == expected
