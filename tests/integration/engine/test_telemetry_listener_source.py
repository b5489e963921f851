"""A telemetry listener is told which worker connection sent each frame, so the observability module can give each
sender its share of its ingest queue (one worker's flood left another's log records 39 of 100 kept, 99 now)."""

from __future__ import annotations

import pytest
from polling import until

from iii_engine import Engine

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: telemetry listeners")]


async def test_each_frame_comes_with_its_worker_id(engine: Engine) -> None:
    got: list[tuple[str, bytes, str]] = []
    engine.add_telemetry_listener(lambda kind, body, source: got.append((kind, body, source)))
    first = await RawWorker.connect(engine.url)
    second = await RawWorker.connect(engine.url)
    try:
        await first.ws.send(b"LOGS" + b'{"resourceLogs": []}')
        await second.ws.send(b"MTRC" + b'{"resourceMetrics": []}')
        await until(lambda: len(got) == 2)
        assert sorted(got) == [("LOGS", b'{"resourceLogs": []}', first.worker_id),
                               ("MTRC", b'{"resourceMetrics": []}', second.worker_id)]
    finally:
        await first.close()
        await second.close()


async def test_a_listener_of_kind_and_body_is_called_so(engine: Engine) -> None:
    """As listeners were written before the worker's id was passed: given three arguments, one failed on every
    frame (a TypeError logged with its traceback per frame)."""
    got: list[tuple[str, bytes]] = []
    engine.add_telemetry_listener(lambda kind, body: got.append((kind, body)))
    worker = await RawWorker.connect(engine.url)
    try:
        await worker.ws.send(b"LOGS" + b'{"resourceLogs": []}')
        await until(lambda: len(got) == 1)
        assert got == [("LOGS", b'{"resourceLogs": []}')]
    finally:
        await worker.close()
