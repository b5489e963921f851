"""The OTLP exporter (attack e): a collector's redirect is a failed export, not followed; the endpoint's secrets are
masked in the log; an endpoint with a query or fragment is refused at start."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.base import ModuleStartError
from iii_engine.modules.observability.exporter import OtlpForwarder
from tests.integration.modules.test_observability import engine_with
from tests.integration.modules.test_observability_alert_actions import hook_server
from tests.polling import until

_LOGGER = "iii_engine.modules.observability.exporter"


async def test_a_redirecting_collector_fails_the_export_and_secrets_are_masked(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before: the 302 was followed with a GET without the body and the records were counted as exported; the log
    # named the endpoint with its password.
    caplog.set_level(logging.WARNING, _LOGGER)
    async with hook_server(302, "/landing?api_key=KEY123", path="/SECRETPATH/v1/logs") as (address, seen):
        endpoint = f"http://otel:Sup3rSecret@{address}/SECRETPATH"
        settings = {"logs_exporter": "otlp", "endpoint": endpoint, "logs_flush_interval_ms": 100}
        async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
            module: Any = engine.module("observability")
            await worker.result("engine::log::info", {"message": "to the collector"})
            await until(lambda: module.forwarder.failed >= 1, within=5)
            assert (module.forwarder.sent, module.forwarder.sent_records) == (0, 0)
            assert module.forwarder.failed_records >= 1
    assert not [line for line in seen if not line.startswith("POST ")], seen  # the Location was never fetched
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert (f"OTLP collector at http://otel:***@{address}/… answered HTTP 302 redirecting to "
            "/… (redirects are not followed) for logs") in text
    assert "Sup3rSecret" not in text and "KEY123" not in text and "SECRETPATH" not in text


async def test_an_unreachable_collector_is_logged_without_its_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, _LOGGER)
    settings = {"logs_exporter": "otlp", "endpoint": "http://otel:Sup3rSecret@127.0.0.1:9",
                "logs_flush_interval_ms": 100}
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")
        await worker.result("engine::log::info", {"message": "lost"})
        await until(lambda: module.forwarder.failed >= 1, within=5)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "OTLP collector at http://otel:***@127.0.0.1:9 unreachable" in text and "Sup3rSecret" not in text


@pytest.mark.parametrize("endpoint", ["http://collector:4318/?k=1", "http://collector:4318/otlp#part",
                                      "http://collector:4318/?"])
async def test_an_endpoint_with_a_query_or_fragment_stops_the_start(endpoint: str) -> None:
    # Before: taken, and /v1/logs was appended after the query (http://collector:4318/?k=1/v1/logs).
    with pytest.raises(ModuleStartError, match=r"config\.endpoint: must have no query \(\?\.\.\.\) nor fragment"):
        async with engine_with({"logs_exporter": "otlp", "endpoint": endpoint}):
            pass


@pytest.mark.parametrize(("endpoint", "problem"), [
    ("http://collector..example.com:4318", r"\(an empty label\): 'http://collector\.\.example\.com:4318'"),
    ("http://.../", r"\(an empty label\)"),
    (f"http://{'c' * 64}.example.com:4318/SECRET", r"\(a label over 63 characters\): 'http://c+\.example\.com:4318/…'"),
])
async def test_an_endpoint_whose_host_cannot_be_sent_to_stops_the_start(endpoint: str, problem: str) -> None:
    # Before: taken; the first export raised UnicodeError (IDNA) and ended the exporter, health still healthy.
    with pytest.raises(ModuleStartError, match=r"config\.endpoint: has a host no request can be sent to " + problem):
        async with engine_with({"logs_exporter": "otlp", "endpoint": endpoint}):
            pass


async def test_the_exporter_outlives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    # Before: the exporter caught aiohttp.ClientError and TimeoutError only; the UnicodeError aiohttp raises for this
    # host ended its task for good: nothing counted, nothing exported again. (The start now refuses such an endpoint;
    # the exporter must survive whatever a post raises all the same.)
    caplog.set_level(logging.WARNING, _LOGGER)
    async with hook_server(200, path="/v1/logs") as (address, seen):
        forwarder = OtlpForwarder("http://collector..example.com:4318")
        forwarder.start()
        try:
            forwarder.submit("logs", b"{}", 2)
            await until(lambda: forwarder.failed == 1, within=5)
            assert forwarder.failed_records == 2
            forwarder.endpoint = f"http://{address}"  # the same task posts the next payload
            forwarder.submit("logs", b"{}", 3)
            await until(lambda: forwarder.sent == 1, within=5)
            assert (forwarder.sent_records, forwarder.failed) == (3, 1)
        finally:
            await forwarder.close()
    assert seen == ["POST /v1/logs 2"]
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "OTLP collector at http://collector..example.com:4318 failed: UnicodeError" in text
