"""``iii-engine logs | traces | metrics | health`` as subprocesses against a real engine with the observability
module, after a worker (our SDK) made a traced three-hop call that logged and counted; plus the one-line errors
for an unreachable engine, an engine without the module and one that keeps no spans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid

import pytest
from module_worker import ModuleWorker
from test_observability import engine_with, eventually, names, run_worker

from iii_engine import Engine, EngineConfig
from tests.conftest import ROOT

pytestmark = pytest.mark.our_engine("configures the observability module")


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "iii_engine", *args, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await start_cli(*args)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_logs_traces_metrics_and_health_of_a_worker() -> None:
    tag = f"cli{uuid.uuid4().hex[:6]}"
    async with engine_with({"enabled": True, "exporter": "memory"}) as engine, ModuleWorker(engine.url) as probe:
        report = await run_worker(sys.executable, engine.url, tag)
        trace_id = report["trace_id"]
        url = ("--url", engine.url)

        async def ingested() -> bool:  # telemetry is stored by a background task
            logs = (await probe.result("engine::logs::list", {"trace_id": trace_id}))["logs"]
            metrics = (await probe.result("engine::metrics::list", {"metric_name": f"{tag}.jobs"}))["sdk_metrics"]
            tree = await probe.result("engine::traces::tree", {"trace_id": trace_id})
            return bool(logs and metrics and tree["roots"] and len(names(tree["roots"][0])) >= 7)

        await eventually(ingested)
        rc, out, err = await cli("logs", *url, "--trace-id", trace_id)
        assert rc == 0 and err == ""
        [line] = out.splitlines()
        assert f"INFO  {tag}-svc  {tag} c ran" in line and f"trace={trace_id}" in line and '"hop": 3' in line

        rc, out, _ = await cli("logs", *url, "--trace-id", trace_id, "--level", "warn")
        assert rc == 0 and out == ""
        rc, out, _ = await cli("logs", *url, "--trace-id", trace_id, "--json")
        assert [entry["body"] for entry in json.loads(out)["logs"]] == [f"{tag} c ran"]

        rc, out, err = await cli("traces", *url, trace_id)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == f"trace {trace_id}" and lines[1].startswith(f"{tag} root  ")
        # engine call spans and the workers' spans nest one level deeper per hop: a -> b -> c
        depth = {hop: min(len(line) - len(line.lstrip()) for line in lines if f"call {tag}::{hop} " in line)
                 for hop in "abc"}
        assert 0 < depth["a"] < depth["b"] < depth["c"]
        assert all(" ms  " in line for line in lines[1:])

        rc, out, _ = await cli("traces", *url, "--list", "--name", tag)
        assert rc == 0 and [line.split()[0] for line in out.splitlines()] == [trace_id]
        assert out.rstrip().endswith(f"{tag} root")

        rc, out, _ = await cli("metrics", *url, "--name", f"{tag}.jobs")
        assert rc == 0
        assert f"  {tag}::c: 1" in out and f"  {tag}.jobs (counter, {tag}-svc): 3" in out

        rc, out, _ = await cli("health", *url)
        assert rc == 0 and out.startswith("status: healthy")
        assert "telemetry: healthy" in out and "dropped_frames=0" in out


async def test_logs_follow_prints_new_entries_through_the_log_trigger() -> None:
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await worker.result("engine::log::info", {"message": "before", "service_name": "svc"})
        proc = await start_cli("logs", "--url", engine.url, "--follow", "--level", "warn")
        assert proc.stdout is not None
        try:
            # "before" is below warn, so nothing shows until "marker", which comes from the history or from the
            # trigger, once either way; both mean the trigger is in place (it is registered before the history
            # is read)
            await worker.result("engine::log::error", {"message": "marker", "service_name": "svc"})
            first = await asyncio.wait_for(proc.stdout.readline(), 15)
            assert b"ERROR svc  marker" in first
            await worker.result("engine::log::info", {"message": "too low", "service_name": "svc"})
            await worker.result("engine::log::warn", {"message": "after", "service_name": "svc"})
            second = await asyncio.wait_for(proc.stdout.readline(), 15)
            assert b"WARN  svc  after" in second
        finally:
            proc.send_signal(signal.SIGTERM)
            rest, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err
        assert b"too low" not in rest and b"marker" not in rest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_clear_one_line_errors() -> None:
    rc, out, err = await cli("logs", "--url", f"ws://127.0.0.1:{_free_port()}")
    assert rc == 1 and out == ""
    assert err.startswith("iii-engine logs: cannot reach the engine at ws://127.0.0.1:") and err.count("\n") == 1

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as bare:
        rc, _, err = await cli("traces", "--url", bare.url, "--list")
        assert rc == 1
        assert err == (f"iii-engine traces: the engine at {bare.url} has no observability module: add "
                       "modules::observability::OtelModule to its config next to the modules you use (a modules: list "
                       "replaces the defaults)\n")

    async with engine_with({"enabled": False}) as no_spans:
        rc, _, err = await cli("traces", "--url", no_spans.url)
        assert rc == 1 and "keeps no spans: set enabled: true and exporter: memory" in err and err.count("\n") == 1
        rc, out, _ = await cli("logs", "--url", no_spans.url)  # logs are kept either way
        assert rc == 0 and out == ""

    rc, _, err = await cli("logs", "--level", "loud")
    assert rc == 2 and err.startswith("iii-engine: argument --level: must be one of trace, debug, info, warn, error")
