"""The engine's own spans and log entries reach an OTLP collector in batches, not one request each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from module_worker import ModuleWorker

from tests.integration.modules.test_observability import engine_with
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the observability module")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[int, dict[str, list[int]]]]:
    """A collector answering at once; yields (port, records per request by path)."""
    got: dict[str, list[int]] = {"/v1/logs": [], "/v1/traces": []}

    async def collect(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        if request.path == "/v1/logs":
            got[request.path] += [len(s["logRecords"]) for r in body["resourceLogs"] for s in r["scopeLogs"]]
        else:
            got[request.path] += [len(s["spans"]) for r in body["resourceSpans"] for s in r["scopeSpans"]]
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_post("/v1/{signal}", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], got  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_engine_logs_and_spans_are_exported_in_batches(collector: tuple[int, dict[str, list[int]]]) -> None:
    # Before: one request per engine::log entry and per call span (120 calls, 120 + 120 requests); against a
    # collector answering at once the attack exported 3,265 and dropped 74,049 in 10 s.
    port, got = collector
    settings = {"enabled": True, "exporter": "otlp", "logs_exporter": "otlp", "endpoint": f"http://127.0.0.1:{port}",
                "logs_batch_size": 50, "logs_flush_interval_ms": 100, "logs_console_output": False}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        await asyncio.gather(*(worker.result("engine::log::info", {"message": f"m{i}"}) for i in range(120)))
        await until(lambda: sum(got["/v1/logs"]) == 120 and sum(got["/v1/traces"]) >= 120, within=5)
        assert len(got["/v1/logs"]) <= 3 and max(got["/v1/logs"]) == 50, got["/v1/logs"]
        assert len(got["/v1/traces"]) <= 3, got["/v1/traces"]
        health = await worker.result("engine::health::check", {})
        details = health["components"]["telemetry"]["details"]
        assert details["exported_records"] >= 240 and details["export_dropped_records"] == 0


async def test_a_batch_still_gathering_is_sent_at_stop(collector: tuple[int, dict[str, list[int]]]) -> None:
    port, got = collector
    settings = {"enabled": True, "exporter": "memory", "logs_exporter": "otlp", "endpoint": f"http://127.0.0.1:{port}",
                "logs_flush_interval_ms": 3_600_000, "logs_console_output": False}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        await worker.result("engine::log::warn", {"message": "last words"})
        assert got["/v1/logs"] == []  # gathered: neither full nor due
    assert got["/v1/logs"] == [1]
