"""The real ``iii-engine`` process: ready line, routing through it, YAML config, clean shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: runs iii-engine processes")]

ROOT = Path(__file__).resolve().parents[3]


async def test_process_routes_calls_between_workers(engine_process: Callable[..., Awaitable[Any]]) -> None:
    proc = await engine_process()
    assert proc.url.startswith("ws://127.0.0.1:") and proc.port > 0
    caller = await RawWorker.connect(proc.url)
    callee = await RawWorker.connect(proc.url)
    await callee.register("proc::echo")
    await callee.sync()
    call = asyncio.create_task(caller.call("proc::echo", {"v": 1}))
    request = await callee.serve_one({"echo": 1})
    assert request["data"] == {"v": 1, "_caller_worker_id": caller.worker_id}
    assert (await call)["result"] == {"echo": 1}
    await caller.close()
    await callee.close()


async def test_process_reads_production_yaml_and_reports_unknown_modules(
        engine_process: Callable[..., Awaitable[Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "port: ${III_TEST_PORT:0}\n"
        "invocation_timeout_ms: 200\n"
        "modules:\n"
        "  - class: modules::observability::OtelModule\n"
        "    config: {exporter: memory}\n"
        "  - class: modules::made_up::Thing\n"
    )
    proc = await engine_process("--config", str(config), "--port", "0", "--allow-degraded")
    worker = await RawWorker.connect(proc.url)
    assert await worker.result_of("engine::functions::list", {}) == {"functions": []}
    health = await worker.result_of("engine::health::check", {})  # the observability module from the YAML
    assert health["components"]["logs"]["status"] == "healthy"
    await worker.close()
    log = proc.log()
    assert log.count("module modules::made_up::Thing not available") == 1
    assert "OtelModule not available" not in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_process_stops_cleanly_on_a_stop_signal(engine_process: Callable[..., Awaitable[Any]],
                                                      sig: signal.Signals) -> None:
    # SIGHUP before: its default ended the process at once, status 129, the worker's connection cut without a Close
    proc = await engine_process()
    worker = await RawWorker.connect(proc.url)
    proc.process.send_signal(sig)
    assert await asyncio.wait_for(proc.process.wait(), 10) == 0
    await asyncio.wait_for(worker.ws.wait_closed(), 5)
    assert worker.ws.close_code == 1001
    said = "SIGHUP: stopping (this engine does not reload its configuration" in proc.log()
    assert said == (sig == signal.SIGHUP)


async def test_an_engine_started_with_sighup_ignored_keeps_running_on_sighup(tmp_path: Path) -> None:
    import os
    import sys

    # nohup's contract: the engine outlives its terminal (the SIGHUP handler above replaced nohup's ignore)
    config = tmp_path / "config.yaml"
    config.write_text("modules: []\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        f"sys.argv = ['iii-engine', '--port', '0', '--config', {str(config)!r}]; "
        "from iii_engine.cli import main; sys.exit(main())",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line.startswith(b"iii engine listening on ")
        proc.send_signal(signal.SIGHUP)
        worker = await RawWorker.connect(line.decode().split()[-1])  # still serving after the signal
        assert await worker.result_of("engine::functions::list", {}) == {"functions": []}
        await worker.close()
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0


async def test_bad_config_file_exits_with_a_message(tmp_path: Path) -> None:
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("modules: 5\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "iii_engine", "--config", str(bad),
                                                stderr=asyncio.subprocess.PIPE,
                                                cwd=ROOT)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"modules: must be a list" in err


async def test_in_process_engine_serve_forever_until_stop() -> None:
    from iii_engine import EngineConfig

    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    task = asyncio.create_task(engine.serve_forever())
    await asyncio.wait_for(engine.ready.wait(), 5)
    worker = await RawWorker.connect(engine.url)
    await engine.stop()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(worker.ws.wait_closed(), 5)
    assert worker.ws.close_code == 1001


async def test_a_start_failure_naming_a_value_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    import os
    import sys

    config = tmp_path / "config.yaml"
    config.write_text("port: 0\nhost: ${III_TEST_HOST}\n")
    env = {**os.environ, "III_TEST_HOST": "127.0.0.1\nport: 1"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "iii_engine", "--config", str(config),
                                                stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    # before: "iii-engine: cannot listen on 127.0.0.1" and "port: 1:0: ..." on two lines
    assert err.decode().count("\n") == 1 and "127.0.0.1\\nport: 1" in err.decode(), err
