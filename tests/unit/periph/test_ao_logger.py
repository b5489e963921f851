"""Attacks on iii.logger.Logger: data that JSON or OTLP cannot carry must not cost the record, and a call from
another thread is correlated and delivered like any other."""

from __future__ import annotations

import math
import threading
from typing import Any

from iii import telemetry
from iii.logger import _MAX_DEPTH, Logger

from .conftest import Frames


def _data(record: dict[str, Any]) -> Any:
    return next(item["value"] for item in record["attributes"] if item["key"] == "log.data")


def test_data_json_cannot_carry_still_reaches_the_engine(frames: Frames) -> None:
    # Before: a NaN or infinite float made the record's export fail ("NaN and Infinity are not valid JSON") and the
    # record (with its whole batch) was lost; an integer past int64 went out as one, which the engine refuses;
    # nesting past the wire's depth bound failed the export too.
    cycle: dict[str, Any] = {"name": "loop"}
    cycle["self"] = cycle
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    cases: list[Any] = [math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1, cycle, deep]
    for i, data in enumerate(cases):
        Logger().info(f"ao case {i}", data)
    telemetry.force_flush()
    records = {record["body"]["stringValue"]: record for record in frames.logs()}
    assert sorted(records) == [f"ao case {i}" for i in range(len(cases))]
    assert [_data(records[f"ao case {i}"]) for i in range(5)] == [
        {"stringValue": "NaN"}, {"stringValue": "Infinity"}, {"stringValue": "-Infinity"},
        {"stringValue": str(2**64)}, {"stringValue": str(-(2**63) - 1)}]
    looped = {item["key"]: item["value"] for item in _data(records["ao case 5"])["kvlistValue"]["values"]}
    assert looped == {"name": {"stringValue": "loop"}, "self": {"stringValue": "<cycle>"}}
    level = _data(records["ao case 6"])
    for _ in range(_MAX_DEPTH):  # 29: what the wire's 128 levels hold of OTLP-JSON (07dc089; it was 32)
        [level] = level["arrayValue"]["values"]
    assert level == {"stringValue": f"<nested deeper than {_MAX_DEPTH} levels>"}


def test_a_call_from_another_thread_keeps_that_threads_span(frames: Frames) -> None:
    seen: dict[str, int] = {}

    def work() -> None:
        with telemetry.get_tracer().start_as_current_span("in thread") as span:
            seen["trace_id"] = span.get_span_context().trace_id
            Logger(service_name="ao").warn("from a thread", {"n": 1})

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    telemetry.force_flush()
    [record] = [r for r in frames.logs() if r["body"] == {"stringValue": "from a thread"}]
    assert record["traceId"] == format(seen["trace_id"], "032x") and record["severityText"] == "WARN"
