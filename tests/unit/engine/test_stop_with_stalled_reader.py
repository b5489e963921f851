"""``Engine.stop`` with a worker that stopped reading, megabytes queued to it, ends within a few seconds.

Before: the stop waited websockets' default close timeout (10 s) per step of the closing handshake for such a peer
(about 40 s measured with several megabytes queued).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig
from tests.polling import until

pytestmark = pytest.mark.timeout(30)


async def test_a_stop_does_not_wait_long_for_a_worker_that_stopped_reading() -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    stopped = False
    stalled: Any = None
    try:
        stalled = await websockets.connect(engine.url, compression=None, max_size=None)
        assert loads(await stalled.recv())["type"] == "workerregistered"
        await stalled.send(dumps({"type": "registerfunction", "id": "w.stalled"}))
        await until(lambda: "w.stalled" in engine.registry.functions)
        stalled.transport.pause_reading()  # it reads nothing more, as a worker stuck in a handler
        worker = next(iter(engine.workers.values()))
        payload = {"blob": "x" * 1_000_000}
        calls = [asyncio.ensure_future(engine.start_invocation("w.stalled", payload)) for _ in range(8)]
        await until(lambda: worker.outbox.queued_bytes > 2_000_000)  # the socket is full, more is queued
        began = time.monotonic()
        await asyncio.wait_for(engine.stop(), 25)
        stopped = True
        took = time.monotonic() - began
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        assert took < 8, f"stop took {took:.1f} s"
    finally:
        if stalled is not None:
            stalled.transport.abort()
        if not stopped:
            await engine.stop()
