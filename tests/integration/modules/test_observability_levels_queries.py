"""Log levels matched by severity number, and query parameters that used to be ignored without a word (found by an
attack on the observability module: t2_logtrigger, t6_params, t7_silent_filters)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.test_ao_observability_attack import send
from tests.integration.modules.test_observability import engine_with, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")

SPANS = {"enabled": True, "exporter": "memory", "logs_console_output": False}


def logs_frame(records: list[tuple[int, str, str]]) -> bytes:
    """A LOGS frame of ``(severityNumber, severityText, body)`` records (0 and "" are left out, as SDKs do)."""
    out = []
    for number, text, body in records:
        record: dict[str, Any] = {"body": {"stringValue": body}}
        if number:
            record["severityNumber"] = number
        if text:
            record["severityText"] = text
        out.append(record)
    return b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": out}]}]}).encode()


RECORDS = [(13, "WARNING", "stdlib warning"), (17, "", "error, no text"), (21, "CRITICAL", "critical"),
           (18, "ERROR2", "error2"), (0, "warning", "warning, no number"), (9, "INFO", "info"),
           (0, "notice", "notice, no number"), (0, "Error3", "error3, no number")]


async def error_of(worker: ModuleWorker, function_id: str, data: Any) -> str:
    frame = await worker.call(function_id, data)
    assert "error" in frame, frame
    assert frame["error"]["code"] == "deserialization_error", frame
    message: str = frame["error"]["message"]
    return message


async def test_log_triggers_match_by_severity_number_then_text() -> None:
    got: dict[str, list[str]] = {"warn": [], "WARNING": [], "error": [], "fatal": [], "all": []}
    async with engine_with({"logs_console_output": False}) as engine, ModuleWorker(engine.url) as worker:
        for level in got:
            async def handler(data: Any, level: str = level) -> None:
                got[level].append(data["body"])

            await worker.function(f"lv::{level}", handler)
            await worker.trigger(f"lv-{level}", "log", f"lv::{level}", {"level": level} if level != "all" else {})
        await send(worker, logs_frame(RECORDS))
        await eventually(lambda: _total(worker, len(RECORDS)))
        # One marker per level, in a later frame: once a trigger has its marker it had every call of the first frame.
        await send(worker, logs_frame([(13, "WARN", "marker"), (17, "ERROR", "marker"), (21, "FATAL", "marker")]))

        async def markers() -> bool:
            return all("marker" in bodies for level, bodies in got.items() if level != "all")

        await eventually(markers)
    # Before: warn got nothing of the first frame (no text "warn"), WARNING only "stdlib warning", error nothing.
    assert got["warn"] == ["stdlib warning", "warning, no number", "marker"]
    assert got["WARNING"] == got["warn"]
    assert got["error"] == ["error, no text", "error2", "error3, no number", "marker"]
    assert got["fatal"] == ["critical", "marker"]  # a level is one level: CRITICAL (21) is fatal, not error
    await eventually(lambda: _settled(got["all"], len(RECORDS) + 3))


async def _total(worker: ModuleWorker, count: int) -> bool:
    return bool((await worker.result("engine::logs::list", {}))["total"] == count)


async def _settled(bodies: list[str], count: int) -> bool:
    return len(bodies) == count


async def test_unknown_log_trigger_levels_are_refused_naming_the_accepted_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine")
    async with engine_with({"logs_console_output": False}) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("lv::sink", lambda data: asyncio.sleep(0))
        accepted = {"ok-all": {"level": "ALL"}, "ok-none": {}, "ok-null": {"level": None}, "ok-warning": {"level":
                    "Warning"}, "ok-critical": {"level": "critical"}, "ok-trace": {"level": "TRACE"}}
        refused = {"bad-number": {"level": 13}, "bad-typo": {"level": "warnn"}, "bad-name": {"level": "verbose"}}
        for trigger_id, config in {**accepted, **refused}.items():
            await worker.trigger(trigger_id, "log", "lv::sink", config)
        listed = {t["id"] for t in (await worker.result("engine::triggers::list", {}))["triggers"]}
    assert listed == set(accepted)  # before: all nine listed, the three bad ones firing for nothing
    rejected = [r.getMessage() for r in caplog.records if "rejected: invalid_trigger_config" in r.getMessage()]
    assert len(rejected) == 3, [r.getMessage() for r in caplog.records]
    assert all("level must be one of trace, debug, info, warn, warning, error, fatal, critical (any case)" in line
               for line in rejected)
    assert "got 13" in rejected[0] and "got 'warnn'" in rejected[1]


async def test_logs_list_severity_text_is_a_level_and_unknown_keys_are_refused() -> None:
    async with engine_with({"logs_console_output": False}) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, logs_frame(RECORDS))
        await eventually(lambda: _total(worker, len(RECORDS)))

        async def bodies(data: dict[str, Any]) -> list[str]:
            return sorted(entry["body"] for entry in (await worker.result("engine::logs::list", data))["logs"])

        # Before: "error" matched nothing here (no record's text is exactly "error"), "WARNING" one record.
        assert await bodies({"severity_text": "error"}) == ["error, no text", "error2", "error3, no number"]
        assert await bodies({"severity_text": "WARNING"}) == ["stdlib warning", "warning, no number"]
        assert await bodies({"severity_text": "Fatal"}) == ["critical"]
        assert await bodies({"severity_min": 17}) == ["critical", "error, no text", "error2"]  # a number, as before
        message = await error_of(worker, "engine::logs::list", {"severity_text": "verbose"})
        assert "severity_text must be one of trace, debug, info, warn, warning, error, fatal, critical" in message
        message = await error_of(worker, "engine::logs::list", {"levle": "warn"})  # before: every entry listed
        assert "unknown field `levle`, expected one of trace_id, span_id, severity_min, severity_text" in message


def span(i: int, duration: int, service: str) -> dict[str, Any]:
    return {"traceId": f"{i:032x}", "spanId": f"{i + 1:016x}", "name": f"root{i}",
            "startTimeUnixNano": str(i * 1000), "endTimeUnixNano": str(i * 1000 + duration),
            "attributes": [{"key": "tenant", "value": {"stringValue": f"t{i}"}},
                           {"key": "tier", "value": {"stringValue": "gold" if i != 2 else "free"}}],
            "resource": service}


async def test_traces_list_refuses_unknown_sorts_malformed_attributes_and_keys() -> None:
    spans = [span(1, 300_000_000, "b"), span(2, 100_000_000, "c"), span(3, 200_000_000, "a")]
    frame = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s.pop(
        "resource")}}]}, "scopeSpans": [{"spans": [s]}]} for s in spans]}
    async with engine_with(SPANS) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, b"OTLP" + json.dumps(frame).encode())

        async def names(data: dict[str, Any]) -> list[str]:
            return [s["name"] for s in (await worker.result("engine::traces::list", data))["spans"]]

        await eventually(lambda: _has_spans(worker, 3))
        assert await names({"sort_order": "ASC"}) == ["root1", "root2", "root3"]
        assert await names({"sort_order": "desc"}) == ["root3", "root2", "root1"]
        assert await names({"sort_by": "duration_ms", "sort_order": "desc"}) == ["root1", "root3", "root2"]
        assert await names({"sort_by": "service_name"}) == ["root3", "root1", "root2"]
        assert await names({"attributes": [["tenant", "t2"]]}) == ["root2"]
        assert await names({"attributes": [["tenant", "t2"], ["tenant", "t3"]]}) == []  # AND, both checked
        assert await names({"exclude_attributes": [["tier", "free"]]}) == ["root1", "root3"]
        assert await names({"trace_ids": [f"{1:032x}", f"{3:032x}"]}) == ["root1", "root3"]
        assert await names({"attribute_projection": ["tenant"], "limit": 1}) == ["root1"]  # taken, spans whole
        # Before: "ascending" sorted descending, "durration" by start time, and the malformed filters were dropped
        # (every trace listed).
        for data, field in (({"sort_order": "ascending"}, "sort_order must be one of asc, desc, got 'ascending'"),
                            ({"sort_order": 5}, "sort_order must be one of asc, desc"),
                            ({"sort_by": "durration"}, "sort_by must be one of start_time, duration, name"),
                            ({"attributes": [{"key": "tenant", "value": "t2"}]}, "attributes[0] must be a [key, "),
                            ({"attributes": [["tenant"]]}, "attributes[0] must be a [key, value] pair"),
                            ({"attributes": [["tenant", "t2"], ["tier", {"a": 1}]]}, "attributes[1] must be"),
                            ({"exclude_attributes": ["tier"]}, "exclude_attributes[0] must be"),
                            ({"trace_ids": [1]}, "trace_ids must be a list of strings"),
                            ({"sortby": "name"}, "unknown field `sortby`")):
            assert field in await error_of(worker, "engine::traces::list", data), data


async def _has_spans(worker: ModuleWorker, count: int) -> bool:
    return bool((await worker.result("engine::traces::list", {}))["total"] == count)


async def test_metrics_list_filters_by_one_bound_and_aggregates_without_bounds() -> None:
    gauge = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "lv.m", "gauge": {"dataPoints": [{"asDouble": 1}]}}]}]}]}
    async with engine_with(SPANS) as engine, ModuleWorker(engine.url) as worker:
        await send(worker, b"MTRC" + json.dumps(gauge).encode())

        async def count(data: dict[str, Any]) -> int:
            answer = await worker.result("engine::metrics::list", {"metric_name": "lv.m", **data})
            return len(answer["sdk_metrics"])

        await eventually(lambda: _positive(count({})))
        now = int(time.time() * 1000)
        # Before: a bound given alone was ignored (1 and 1 here), and an interval without both bounds no aggregate.
        assert await count({"start_time": now + 3_600_000}) == 0
        assert await count({"end_time": 0}) == 0
        assert await count({"start_time": now - 3_600_000}) == 1
        assert await count({"end_time": now + 3_600_000}) == 1
        answer = await worker.result("engine::metrics::list", {"aggregate_interval": 60})
        assert [b["name"] for b in answer["aggregated_metrics"]] == ["lv.m"]
        assert answer["query"]["aggregate_interval"] == 60
        answer = await worker.result("engine::metrics::list", {"aggregate_interval": 60, "start_time": now + 3_600_000})
        assert "aggregated_metrics" not in answer  # none in the window
        message = await error_of(worker, "engine::metrics::list", {"metric": "lv.m"})
        assert "unknown field `metric`, expected one of start_time, end_time, metric_name" in message


async def _positive(value: Any) -> bool:
    return bool(await value)
