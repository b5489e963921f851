"""The OTLP forwarder against a collector that never answers: its queue is bounded in bytes, not only in payloads,
what does not fit is counted, and closing it is bounded in time."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from iii_engine.modules.observability.exporter import OtlpForwarder
from tests.otlp_collector import OtlpCollector
from tests.polling import until


async def test_a_stalled_collector_holds_a_bounded_number_of_bytes() -> None:
    async with OtlpCollector(stall=True) as collector:
        forwarder = OtlpForwarder(collector.url, timeout_s=0.5, stop_timeout_s=0.5)
        forwarder.start()
        body = b"x" * (8 * 1024 * 1024)  # one object queued many times: the test itself stays small
        # Before: 1024 payloads of up to max_frame_bytes (8 MiB) each could wait, 8 GiB; now 64 MiB by default.
        for _ in range(20):
            forwarder.submit("traces", body)
        assert forwarder.dropped == 12 and forwarder._queued_bytes == 8 * len(body)
        await asyncio.wait_for(collector.arrived.wait(), 5)  # the first one was taken: room for exactly one more
        forwarder.submit("traces", body)
        forwarder.submit("traces", body)
        assert forwarder.dropped == 13
        started = time.monotonic()
        await forwarder.close()
        assert time.monotonic() - started < 3.0
        await until(lambda: forwarder.failed >= 1, within=1)


async def test_a_collector_that_is_gone_is_not_a_flood_of_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # Before: one warning per payload, so a collector that is down wrote the engine's log as fast as telemetry came.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        forwarder = OtlpForwarder(f"http://127.0.0.1:{port}", timeout_s=2)
        forwarder.start()
        for _ in range(50):
            forwarder.submit("logs", b"{}", 3)
        await until(lambda: forwarder.failed == 50)
        await forwarder.close()
    lines = [r for r in caplog.records if "OTLP collector" in r.getMessage()]
    assert len(lines) == 1 and "(1 failed so far, 3 records in them lost)" in lines[0].getMessage()
    assert forwarder.failed_records == 150  # before: not counted, only the 50 requests
