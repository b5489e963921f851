"""The ingest task converts a frame's entries a slice at a time, letting the event loop run between slices."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii.protocol.worker_session import OFFLOOP_PARSE_BYTES
from iii_engine.modules.observability import module as observability_module
from iii_engine.modules.observability.module import OtelModule
from tests.polling import until


def _metrics_frame(count: int) -> bytes:
    metrics = [{"name": f"m{i}", "gauge": {"dataPoints": [{"asDouble": float(p)} for p in range(10)]}}
               for i in range(count)]
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]}).encode()


class Ticks:
    """The event loop's turns counted by a task that only yields, while the module's ingest task runs."""

    def __init__(self) -> None:
        self.count = 0
        self._done = asyncio.Event()

    async def _tick(self) -> None:
        while not self._done.is_set():
            self.count += 1
            await asyncio.sleep(0)

    @contextlib.asynccontextmanager
    async def running(self, module: OtelModule) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        ingest, counting = loop.create_task(module._ingest_loop()), loop.create_task(self._tick())
        try:
            yield
        finally:
            self._done.set()
            ingest.cancel()
            await counting


async def test_a_frame_is_converted_with_the_loop_free_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a frame was converted in one go (one 3.5 MiB frame of 10,000 metrics held the loop ~420 ms; the
    # attack's probe waited 516 ms, now 140 ms). With a slice of 0 s each entry is a slice of its own, so other
    # tasks run between every two of the 200 metrics; before, they ran once or twice for the whole frame.
    monkeypatch.setattr(observability_module, "CONVERT_SLICE_S", 0.0, raising=False)
    module = OtelModule(None, {"enabled": True, "exporter": "memory"})  # type: ignore[arg-type]
    body = _metrics_frame(200)
    assert len(body) < OFFLOOP_PARSE_BYTES  # parsed on the loop: no await in the parse
    ticks = Ticks()
    seen: dict[str, int] = {}  # ticks when the frame was parsed (on the loop) and when its entries were stored
    parse, add = module._parse, module.metrics.add

    def parsing(raw: bytes) -> Any:
        seen["parsed"] = ticks.count
        return parse(raw)

    def adding(metrics: list[dict[str, Any]], **how: Any) -> None:
        seen["stored"] = ticks.count
        add(metrics, **how)

    monkeypatch.setattr(module, "_parse", parsing)
    monkeypatch.setattr(module.metrics, "add", adding)
    async with ticks.running(module):
        module.ingest("MTRC", body)
        await until(lambda: module.ingested_frames == 1, within=10)
    assert len(module.metrics.entries()) == 200
    assert seen["stored"] - seen["parsed"] >= 200, seen


@pytest.mark.parametrize("kind", ["MTRC", "OTLP", "LOGS"])
async def test_a_frames_entries_are_stored_with_the_loop_free_between_slices(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a frame's converted entries were stored in one call: 10,000 metrics held the loop ~65-75 ms after the
    # conversion's slices (the parse's own hold, ~110-150 ms for a 4 MiB frame, stays). With a slice of 0 s each
    # STORE_CHUNK of entries is a slice of its own.
    monkeypatch.setattr(observability_module, "CONVERT_SLICE_S", 0.0, raising=False)
    module = OtelModule(None, {"enabled": True, "exporter": "memory", "memory_max_spans": 1000,  # type: ignore[arg-type]
                               "logs_console_output": False})
    count = 600  # STORE_CHUNK 256: three calls
    target: object
    if kind == "MTRC":
        body, stored, target, name = _metrics_frame(count), module.metrics.entries, module.metrics, "add"
    elif kind == "OTLP":
        spans = [{"traceId": "ab" * 16, "spanId": f"{i + 1:016x}", "name": f"s{i}"} for i in range(count)]
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
        assert module.spans is not None
        stored, target, name = module.spans.entries, module.spans, "add_all"
    else:
        records = [{"body": {"stringValue": f"r{i}"}} for i in range(count)]
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()
        stored, target, name = module.logs.entries, module, "_add_logs"
    ticks = Ticks()
    calls: list[tuple[int, int]] = []  # (ticks when called, entries given)
    store = getattr(target, name)

    def storing(entries: list[dict[str, Any]], *rest: Any, **how: Any) -> None:
        calls.append((ticks.count, len(entries)))
        store(entries, *rest, **how)

    monkeypatch.setattr(target, name, storing)
    async with ticks.running(module):
        module.ingest(kind, body)
        await until(lambda: module.ingested_frames == 1, within=10)
    assert len(stored()) == count
    assert [n for _, n in calls] == [256, 256, 88], calls  # before: [600]
    assert calls[0][0] < calls[1][0] < calls[2][0], calls  # other tasks ran between the calls
