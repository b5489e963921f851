"""``iii-engine logs --follow`` outlives its engine: it says the connection was lost, reconnects for as long as it
runs, and prints what the engine logs after it is back (before, it gave up after about 1.5 s of outage and then
printed nothing, silently, until Ctrl-C)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from module_worker import ModuleWorker
from test_inspect_cli import start_cli

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.our_engine("restarts an engine with the observability module on one port")

OTEL = "modules::observability::OtelModule"
# Longer than the reconnect attempts of a one-shot command (about 1.5 s): the follower must not give up.
OUTAGE_S = 2.5


def _engine(port: int = 0) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, {})]), port=port)


async def _line_with(stream: asyncio.StreamReader, text: bytes) -> bytes:
    while True:
        line = await asyncio.wait_for(stream.readline(), 15)
        assert line, f"the stream ended before a line with {text!r}"
        if text in line:
            return line


async def test_a_follower_reconnects_after_an_outage_and_prints_what_comes_after() -> None:
    engine = _engine()
    await engine.start()
    port = engine.port
    proc = await start_cli("logs", "--url", engine.url, "--follow", "--level", "warn")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with ModuleWorker(engine.url) as worker:
            await worker.result("engine::log::warn", {"message": "first", "service_name": "svc"})
            assert b"first" in await _line_with(proc.stdout, b"first")
        await engine.stop()
        assert b"reconnecting" in await _line_with(proc.stderr, b"was lost")
        await asyncio.sleep(OUTAGE_S)  # (the outage itself, not a wait for something to happen)
        engine = _engine(port)
        await engine.start()
        async with ModuleWorker(engine.url) as worker:
            # logged before or after the follower is back: from the re-read or from the trigger, once either way
            await worker.result("engine::log::warn", {"message": "after-restart", "service_name": "svc"})
            assert b"after-restart" in await _line_with(proc.stdout, b"after-restart")
            assert b"again" in await _line_with(proc.stderr, b"connected to")
            await worker.result("engine::log::warn", {"message": "later", "service_name": "svc"})
            assert b"later" in await _line_with(proc.stdout, b"later")
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 15)
        await engine.stop()
    assert proc.returncode == 0
    assert b"after-restart" not in rest  # printed once
