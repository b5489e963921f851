"""A call (a frame waiting for its answer) queued while the client reconnects: its caller's timeout still ends it,
the timed-out call is never sent later, and a call still waited for is sent once, on the next socket."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from polling import until
from stall_relay import Relay

from iii import InitOptions
from iii.iii import III, register_worker
from iii.telemetry_types import OtelConfig
from iii_engine import Engine
from tests.integration.sdk.conftest import FAST_RECONNECT

pytestmark = pytest.mark.timeout(30)


class HoldingRelay(Relay):
    """A relay that can hold new connections (accepted, not yet passed on): a client's handshake waits meanwhile."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.admit = asyncio.Event()
        self.admit.set()
        self.held = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.admit.is_set():
            self.held += 1
            await self.admit.wait()
        await super()._accept(reader, writer)


@pytest.fixture
async def relay(engine: Engine) -> AsyncIterator[HoldingRelay]:
    relay = HoldingRelay(engine.port)
    await relay.start()
    try:
        yield relay
    finally:
        relay.admit.set()
        await relay.close()


def options(name: str) -> InitOptions:
    return InitOptions(worker_name=name, enable_metrics_reporting=False, otel=OtelConfig(enabled=False),
                       reconnection_config=FAST_RECONNECT)


async def test_a_call_queued_while_reconnecting_times_out_on_time_and_is_never_sent_later(
        engine: Engine, relay: HoldingRelay) -> None:
    ran: Counter[str] = Counter()
    worker = await asyncio.to_thread(register_worker, engine.url, options("rbr-runner"))
    client: III | None = None
    try:
        async def run(data: Any) -> str:
            ran[data["tag"]] += 1
            return str(data["tag"])

        worker.register_function({"id": "rbr::run"}, run)
        await until(lambda: "rbr::run" in engine.registry.functions)
        client = await asyncio.to_thread(register_worker, relay.url, options("rbr-caller"))
        assert await client.trigger_async({"function_id": "rbr::run", "payload": {"tag": "warm"}}) == "warm"

        relay.admit.clear()
        relay.cut()  # the client reconnects; its next handshake is held
        await until(lambda: relay.held >= 1)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.trigger_async({"function_id": "rbr::run", "payload": {"tag": "late"}, "timeout_ms": 300})
        waited = time.monotonic() - began
        kept = asyncio.ensure_future(client.trigger_async({"function_id": "rbr::run", "payload": {"tag": "kept"},
                                                           "timeout_ms": 10_000}))
        await asyncio.sleep(0.05)
        assert not kept.done()
        relay.admit.set()
        assert await asyncio.wait_for(kept, 10) == "kept"
        assert await client.trigger_async({"function_id": "rbr::run", "payload": {"tag": "after"}}) == "after"
        assert 0.3 <= waited < 1.5  # the caller's own timeout, while no socket was up
        assert ran == Counter({"warm": 1, "kept": 1, "after": 1})  # "late" never ran; "kept" ran once
    finally:
        relay.admit.set()
        if client is not None:
            await asyncio.to_thread(client.shutdown)
        await asyncio.to_thread(worker.shutdown)
