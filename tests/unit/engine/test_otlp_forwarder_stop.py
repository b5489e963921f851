"""The engine's stop against an OTLP collector that never answers: bounded by ``export_stop_timeout_ms``, and what
was not delivered is counted and logged, not dropped without a word."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.observability.exporter import OtlpForwarder, collector_url
from tests.otlp_collector import OtlpCollector

OTEL = "modules::observability::OtelModule"


@pytest.fixture
async def stalled_collector() -> AsyncIterator[OtlpCollector]:
    """A collector that takes each POST and never answers (``arrived``: set once a POST arrived)."""
    async with OtlpCollector(stall=True) as collector:
        yield collector


async def test_close_is_bounded_and_counts_what_it_could_not_deliver(
        stalled_collector: OtlpCollector, caplog: pytest.LogCaptureFixture) -> None:
    forwarder = OtlpForwarder(stalled_collector.url, timeout_s=30, stop_timeout_s=0.2)
    forwarder.start()
    for _ in range(3):
        forwarder.submit("traces", b"{}")
    await asyncio.wait_for(stalled_collector.arrived.wait(), 5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await forwarder.close()
    # Before: close waited out the post timeout (30 s here, 10 s by default) and said nothing of what was left.
    assert time.monotonic() - started < 2.0
    assert forwarder.dropped == 3 and forwarder.sent == 0
    lines = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert lines == [f"OTLP export stopped with 3 payload(s) (6 bytes) not delivered to {stalled_collector.url} "
                     "within 0.2 s"]
    await forwarder.close()  # twice: nothing more to do
    assert forwarder.dropped == 3


async def test_a_delivered_queue_closes_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async with OtlpCollector() as collector:
        forwarder = OtlpForwarder(collector.url, stop_timeout_s=5)
        forwarder.start()
        for n in range(5):
            forwarder.submit("logs", b'{"n":%d}' % n)
        with caplog.at_level(logging.WARNING):
            await forwarder.close()  # flushes all five before it stops
        assert [body for _, body in collector.requests] == [b'{"n":%d}' % n for n in range(5)]
        assert forwarder.sent == 5 and forwarder.dropped == 0
        assert not [r for r in caplog.records if "not delivered" in r.getMessage()]


async def test_engine_stop_waits_export_stop_timeout_ms_at_most(stalled_collector: OtlpCollector) -> None:
    settings = {"enabled": True, "exporter": "otlp", "endpoint": stalled_collector.url,
                "logs_exporter": "memory", "export_stop_timeout_ms": 300}
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, settings)]))
    await engine.start()
    module = engine.modules["observability"]
    forwarder = module.forwarder  # type: ignore[attr-defined]
    assert forwarder is not None
    forwarder.submit("traces", b"{}")
    await asyncio.wait_for(stalled_collector.arrived.wait(), 5)
    started = time.monotonic()
    await engine.stop()
    # Before: the stop waited the forwarder's 10 s post timeout.
    assert time.monotonic() - started < 3.0
    assert forwarder.dropped == 1


def test_export_stop_timeout_ms_is_checked() -> None:
    from iii_engine.modules.observability.settings import ObservabilitySettings
    from iii_engine.settings import ConfigError

    assert ObservabilitySettings.parse({"export_stop_timeout_ms": "250"}).export_stop_timeout_ms == 250
    with pytest.raises(ConfigError, match="export_stop_timeout_ms"):
        ObservabilitySettings.parse({"export_stop_timeout_ms": -1})


@pytest.mark.parametrize(("endpoint", "url"), [
    # before: a text replace of ":4317" sent these to port 43181 and 43189 (a CI run's stalled collector listened on
    # 43171: the engine posted to 43181, refused, and the test waited for a post that never came)
    ("http://127.0.0.1:43171", "http://127.0.0.1:43171/v1/traces"),
    ("http://otel:43179/v1/logs", "http://otel:43179/v1/traces"),
    ("http://otel:4317", "http://otel:4318/v1/traces"),  # OTLP/gRPC's port: OTLP/HTTP's
    ("http://user:pw@[::1]:4317/", "http://user:pw@[::1]:4318/v1/traces"),
    ("http://otel:14317", "http://otel:14317/v1/traces"),
])
def test_only_port_4317_becomes_4318(endpoint: str, url: str) -> None:
    assert collector_url(endpoint, "traces") == url
