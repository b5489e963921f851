"""End to end: a worker logging a flood of records (one telemetry frame each) behind an engine that stopped reading
still gets its next call through once the engine reads again; the telemetry that did not fit is dropped and
counted. Before, the log records filled the outbound queue and the call failed with "never sent: the outbound queue
was full"."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from polling import until
from stall_relay import SMALL_BUFFER, Relay

from iii import InitOptions, OtelConfig, telemetry
from iii.iii import III, register_worker
from iii.logger import Logger
from iii_engine import Engine
from tests.integration.sdk.conftest import FAST_RECONNECT

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("fresh_telemetry")]

THREADS = 8
RECORDS = 1_600


@pytest.fixture
async def relay(engine: Engine) -> AsyncIterator[Relay]:
    relay = Relay(engine.port)
    await relay.start()
    try:
        yield relay
    finally:
        relay.flowing.set()
        await relay.close()


async def test_a_log_flood_behind_a_stalled_engine_leaves_room_for_the_next_call(engine: Engine,
                                                                               relay: Relay) -> None:
    quiet = InitOptions(worker_name="tel-runner", enable_metrics_reporting=False, otel=OtelConfig(enabled=False),
                        reconnection_config=FAST_RECONNECT)
    worker = await asyncio.to_thread(register_worker, engine.url, quiet)
    client: III | None = None
    try:
        async def echo(data: Any) -> Any:
            return data["n"]

        worker.register_function({"id": "tel::echo"}, echo)
        await until(lambda: "tel::echo" in engine.registry.functions)
        logging_on = OtelConfig(enabled=True, service_name="tel-flood", fetch_instrumentation_enabled=False,
                                metrics_enabled=False, logs_enabled=True, logs_batch_size=1)
        client = await asyncio.to_thread(register_worker, relay.url, InitOptions(
            worker_name="tel-flooder", enable_metrics_reporting=False, otel=logging_on,
            reconnection_config=FAST_RECONNECT))
        assert await client.trigger_async({"function_id": "tel::echo", "payload": {"n": 0}}) == 0
        conn = client._conn
        ws = conn._ws
        assert ws is not None
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        conn._send_timeout = 60.0  # the stall is the test's: the socket must not be dropped meanwhile
        relay.flowing.clear()

        def log_records(thread: int) -> None:
            logger = Logger(service_name="tel-flood")
            for n in range(RECORDS // THREADS):
                logger.info(f"record {thread}/{n}", {"filler": "x" * 200})

        threads = [threading.Thread(target=log_records, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join)
        assert await asyncio.to_thread(telemetry.force_flush, 10_000)
        await until(lambda: conn.dropped > 0)  # the queue's share for telemetry is full
        call = asyncio.ensure_future(client.trigger_async({"function_id": "tel::echo", "payload": {"n": 1},
                                                           "timeout_ms": 15_000}))
        # queued behind the telemetry (its key listed), or refused at once
        await until(lambda: call.done() or conn._keyed > 0)
        assert not call.done(), "the call ended while the engine was not reading"
        relay.flowing.set()
        assert await asyncio.wait_for(call, 20) == 1
        assert conn._ws is ws  # same socket: nothing was dropped but telemetry
        assert 0 < conn.dropped < RECORDS
    finally:
        relay.flowing.set()
        if client is not None:
            await asyncio.to_thread(client.shutdown)
        await asyncio.to_thread(worker.shutdown)
