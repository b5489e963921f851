"""Telemetry sent while the engine is unreachable waits in the outbound queue (at most its best-effort share) and goes
out on the next connection; what does not fit is counted in ``Connection.dropped`` and logged. Before, 200
``Logger.warn`` records of an outage: the engine got 1 of 200, ``Connection.dropped`` stayed 0, nothing logged
(``III.send_telemetry`` dropped every frame while the connection was not ready)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from iii import InitOptions, ReconnectionConfig, register_worker
from iii.connection import Connection
from iii.iii import III
from tests.conftest import EngineProcess
from tests.integration.sdk.conftest import FAST_RECONNECT
from tests.polling import until

GIVE_UP_AT_ONCE = ReconnectionConfig(initial_delay_ms=10, max_retries=0)

_CONFIG = """\
modules:
  - class: modules::observability::OtelModule
    config:
      enabled: true
      exporter: memory
      logs_console_output: false
"""


def _log_frame(body: str) -> bytes:
    record = {"timeUnixNano": "1700000000000000000", "severityNumber": 13, "severityText": "WARN",
              "body": {"stringValue": body}}
    return b"LOGS" + json.dumps({"resourceLogs": [{"resource": {"attributes": []},
                                                   "scopeLogs": [{"scope": {"name": "t"},
                                                                  "logRecords": [record]}]}]}).encode()


async def _bodies(client: III, prefix: str) -> int:
    listed = await client.trigger_async({"function_id": "engine::logs::list", "payload": {"limit": 10_000}})
    return sum(str(entry.get("body", "")).startswith(prefix) for entry in listed["logs"])


async def test_telemetry_of_an_outage_is_queued_and_what_does_not_fit_is_counted_and_logged(
        engine_process: Callable[..., Awaitable[EngineProcess]], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text(_CONFIG)
    served = await engine_process("--config", str(config))
    client = await asyncio.to_thread(register_worker, served.url,
                                     InitOptions(worker_name="outage", reconnection_config=FAST_RECONNECT))
    conn = client._conn
    try:
        served.process.kill()
        await served.process.wait()
        await until(lambda: not conn.is_ready)
        share = conn._best_effort_cap  # 500 of the default 1,000 frames
        extra = 20
        with caplog.at_level(logging.WARNING, logger="iii.connection"):
            for n in range(share + extra):
                client.send_telemetry(_log_frame(f"outage {n}"))
            # (handed to the client's loop thread: queued or dropped there)
            await until(lambda: conn._best_effort + conn.dropped >= share + extra, 5)
        assert conn._best_effort == share, "telemetry of the outage was not queued"
        assert conn.dropped == extra
        warnings = [r.getMessage() for r in caplog.records if "best-effort frame(s)" in r.getMessage()]
        assert warnings and "1 best-effort frame(s)" in warnings[0], warnings  # the first at once, rate-limited

        await engine_process("--config", str(config), "--port", str(served.port))
        await until(lambda: conn.is_ready, 15)
        client.send_telemetry(_log_frame("after 0"))
        deadline = asyncio.get_running_loop().time() + 15
        while (got := await _bodies(client, "outage ")) < share:
            assert asyncio.get_running_loop().time() < deadline, f"the engine got {got} of {share} queued records"
            await asyncio.sleep(0.05)
        assert got == share and conn.dropped == extra
    finally:
        await asyncio.to_thread(client.shutdown)


async def test_telemetry_once_reconnection_gave_up_is_dropped_counted_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    gave_up = asyncio.Event()
    conn = Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, reconnection=GIVE_UP_AT_ONCE,
                      on_state=lambda state: gave_up.set() if state == "failed" else None)
    await conn.start()
    try:
        await asyncio.wait_for(gave_up.wait(), 10)
        with caplog.at_level(logging.WARNING, logger="iii.connection"):
            conn.send_soon(_log_frame("late"), droppable=True)
        # Queued, it would wait for a connection nothing will make, unseen.
        assert len(conn._backlog) == 0 and conn.dropped == 1
        assert any("reconnection gave up" in r.getMessage() and "1 best-effort frame(s)" in r.getMessage()
                   for r in caplog.records), caplog.text
    finally:
        await conn.close()
