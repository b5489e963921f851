"""A bridge (any SDK client) whose engine is unreachable logs the outage in a few lines (attack on the bridge's
configuration): each link retries every 2 s for ever and logged ``Connection to ws://… failed: …`` at each attempt,
1,800 warnings an hour per link. Now the first attempts of an outage are logged as before, then one summary a minute
says it goes on, and one line says when it is connected again."""

from __future__ import annotations

import logging

import pytest

import iii.connection
from iii.iii import III
from iii.iii_constants import InitOptions, ReconnectionConfig
from iii.telemetry_types import OtelConfig
from iii_engine import Engine, EngineConfig
from tests.integration.engine.test_startup_trust import free_port
from tests.polling import until

pytestmark = pytest.mark.our_engine("starts an engine of ours on the port the client failed to reach")

_FAST = ReconnectionConfig(initial_delay_ms=5, max_delay_ms=5, backoff_multiplier=1.0, jitter_factor=0.0,
                           max_retries=-1)


async def test_an_outage_is_logged_in_a_few_lines_and_its_end_too(caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    caplog.set_level(logging.INFO, logger="iii.connection")

    def said(start: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "iii.connection" and r.getMessage().startswith(start)]

    client = III(url, InitOptions(worker_name="unreachable", reconnection_config=_FAST,
                                  enable_metrics_reporting=False, otel=OtelConfig(enabled=False)))
    try:
        conn = client._conn
        await until(lambda: conn.failed_attempts >= 40)
        # before: one warning per attempt (40 and more)
        assert len(said(f"Connection to {url} failed: ")) == 3, said("Connection to")
        assert not said(f"Connection to {url} still failing")

        monkeypatch.setattr(iii.connection, "OUTAGE_SUMMARY_INTERVAL_S", 0.0)  # (a minute gone by)
        await until(lambda: bool(said(f"Connection to {url} still failing")))
        monkeypatch.setattr(iii.connection, "OUTAGE_SUMMARY_INTERVAL_S", 3600.0)
        summaries = said(f"Connection to {url} still failing: ")
        assert " attempts since " in summaries[0] and ", latest error: " in summaries[0], summaries
        attempts = conn.failed_attempts
        await until(lambda: conn.failed_attempts >= attempts + 20)
        assert said(f"Connection to {url} still failing: ") == summaries
        assert len(said(f"Connection to {url} failed: ")) == 3

        async with Engine(config=EngineConfig(host="127.0.0.1", port=port)):
            await until(lambda: client.get_connection_state() == "connected")
            again = said(f"Connected to {url} again after ")
            assert len(again) == 1 and " failed attempts since " in again[0], again
    finally:
        await client.shutdown_async()
