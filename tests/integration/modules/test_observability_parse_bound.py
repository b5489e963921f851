"""One telemetry frame's parse is bounded in memory (max_frame_parse_bytes), not only its bytes.

Before: a frame under max_frame_bytes (8 MiB) was parsed whatever it held; 8 MiB of ``{},`` are 2.8 million dicts,
and the engine's peak resident memory grew by about 243 MB for that one frame. Now its structure is counted first
and a frame whose parse would hold more than the bound is dropped unparsed (counted in dropped_frames, logged at
most once per interval); a frame of real spans of the same size is still stored.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.test_observability import engine_with, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def empty_objects(size: int) -> bytes:
    """An OTLP frame of about ``size`` bytes whose spans list holds only ``{}``."""
    count = (size - 20) // 3
    return ('{"resourceSpans":[' + ",".join(["{}"] * count) + "]}").encode()


def spans_frame(count: int, tag: str) -> bytes:
    """An OTLP frame of ``count`` spans with ten string attributes each (about 1.1 KB a span)."""
    spans = [{"traceId": "%032x" % (i + 1), "spanId": "%016x" % (i + 1), "name": f"{tag}-{i}",
              "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000", "kind": 2,
              "attributes": [{"key": f"attr.{k}", "value": {"stringValue": f"value-{i}-{k}"}} for k in range(10)],
              "status": {"code": 1}} for i in range(count)]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                          "scopeSpans": [{"scope": {"name": tag}, "spans": spans}]}]}).encode()


async def test_a_frame_whose_parse_is_too_big_is_dropped_unparsed_and_real_spans_are_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = {"enabled": True, "exporter": "memory", "memory_max_spans": 5000,
                "max_frame_parse_bytes": 16 * 1024 * 1024}
    costly = empty_objects(1024 * 1024)  # estimated at about 80 MB
    normal = spans_frame(900, "pb")  # about 1 MB, estimated at about 9 MB
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        assert worker._ws is not None
        with caplog.at_level(logging.WARNING, logger="iii_engine.modules.observability.module"):
            for frame in (costly, normal, costly):
                await worker._ws.send(b"OTLP" + frame)

            async def handled() -> dict[str, Any] | None:
                health = await worker.result("engine::health::check", {})
                details: dict[str, Any] = health["components"]["telemetry"]["details"]
                done = details["ingested_frames"] + details["dropped_frames"] + details["malformed_frames"]
                return details if done == 3 else None

            details = await eventually(handled, within=20)
        # before: {'ingested_frames': 3, 'dropped_frames': 0, ...}: both costly frames were parsed whole
        assert (details["ingested_frames"], details["dropped_frames"], details["malformed_frames"]) == (1, 2, 0)
        assert len([s for s in module.spans.entries() if s["name"].startswith("pb-")]) == 900
    said = [r.getMessage() for r in caplog.records if "unparsed" in r.getMessage()]
    assert len(said) == 1, said  # once per interval, not once per frame
    assert "whose parse would hold about" in said[0] and "max_frame_parse_bytes" in said[0]


_PEAK = textwrap.dedent("""
    import asyncio, json, sys
    from iii_engine import Engine
    from iii_engine.config import EngineConfig
    from iii_engine.modules.base import ModuleSpec
    from tests.polling import until
    from tests.integration.modules.test_observability_parse_bound import empty_objects, spans_frame

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith(key))

    async def main(kind):
        body = empty_objects(8 * 1024 * 1024) if kind == "empty" else spans_frame(9500, "pk")
        spec = ModuleSpec("modules::observability::OtelModule",
                          {"enabled": True, "exporter": "memory", "memory_max_spans": 10000,
                           "max_frame_entries": 10000, "logs_console_output": False})
        async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as engine:
            module = engine.module("observability")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak (VmHWM) starts again from here
            before = status("VmRSS")
            module.ingest("OTLP", body)
            await until(lambda: module.ingested_frames + module.dropped_frames + module.malformed_frames == 1, 25)
            stored = len(module.spans.entries())
            print(json.dumps({"bytes": len(body), "grew_mb": status("VmHWM") - before, "stored": stored,
                              "dropped": module.dropped_frames}))

    asyncio.run(main(sys.argv[1]))
""")


def peak(kind: str) -> dict[str, Any]:
    """What ingesting one 8 MiB frame of ``kind`` does to a fresh engine process's peak resident memory."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    done = subprocess.run([sys.executable, "-c", _PEAK, kind], capture_output=True, text=True, timeout=28,
                          check=False, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_8_mib_frame_of_empty_objects_costs_no_parse() -> None:
    result = peak("empty")
    assert result["bytes"] > 8_000_000
    # before: {'grew_mb': 243, 'dropped': 0}
    assert result["dropped"] == 1 and result["grew_mb"] < 40, result


def test_an_8_mib_frame_of_real_spans_is_still_stored() -> None:
    result = peak("spans")
    assert result["bytes"] > 7_000_000
    assert result["dropped"] == 0 and result["stored"] == 9500, result
