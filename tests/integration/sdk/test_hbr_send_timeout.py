"""A client whose engine stopped reading drops the connection after ``send_timeout`` and reconnects.

Before: a fire-and-forget ``trigger()`` against an engine that stopped reading (its TCP window shut) waited for the
socket to drain for as long as the window stayed shut; websockets' keep-alive could not notice either (its ping waits
for the same drain before its pong timeout starts), so the client stayed "connected" and the call blocked: 95 s
measured, and it would have gone on.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from polling import until
from stall_relay import SMALL_BUFFER, Relay

from iii import InitOptions, ReconnectionConfig, TriggerAction
from iii.connection import Connection
from iii.iii import III
from iii.telemetry_types import OtelConfig

pytestmark = pytest.mark.timeout(30)

SEND_TIMEOUT_S = 0.5
PAYLOAD = "x" * (64 << 10)


@pytest.fixture
async def relay(engine_url: str) -> AsyncIterator[Relay]:
    port = urlsplit(engine_url).port
    assert port is not None
    relay = Relay(port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


async def test_a_void_trigger_against_an_engine_that_stopped_reading_drops_the_connection_after_send_timeout(
        relay: Relay) -> None:
    client = III(relay.url, InitOptions(worker_name="hbr-send-timeout", enable_metrics_reporting=False,
                                        otel=OtelConfig(enabled=False),
                                        reconnection_config=ReconnectionConfig(initial_delay_ms=50, max_delay_ms=50,
                                                                               jitter_factor=0.0)))
    stop = threading.Event()
    try:
        await asyncio.to_thread(client._wait_until_connected, 10)
        conn = client._conn
        conn._send_timeout = SEND_TIMEOUT_S
        ws = conn._ws
        assert ws is not None
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        relay.flowing.clear()  # the engine stops reading
        blocked_since: list[float] = []

        def fire_until_blocked() -> None:
            while not stop.is_set():
                began = time.monotonic()
                client.trigger({"function_id": "nobody::hbr", "payload": PAYLOAD, "action": TriggerAction.Void()})
                if time.monotonic() - began > SEND_TIMEOUT_S / 2:
                    blocked_since.append(began)  # this one waited for the socket, until the connection was dropped
                    return

        firing = asyncio.ensure_future(asyncio.to_thread(fire_until_blocked))
        await until(lambda: client._conn._ws is not ws)  # declared dead: dropped (and maybe already replaced)
        await asyncio.wait_for(firing, 10)  # the blocked call returned (its frame was lost with the socket)
        assert blocked_since and time.monotonic() - blocked_since[0] < SEND_TIMEOUT_S + 3

        relay.flowing.set()
        await asyncio.to_thread(client._wait_until_connected, 10)
        assert client._conn._ws is not ws  # a new socket
        functions = await client.list_functions_async()  # the new connection works
        assert isinstance(functions, list)
    finally:
        stop.set()
        relay.flowing.set()
        await asyncio.to_thread(client.shutdown)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_a_send_timeout_that_cannot_bound_anything_is_refused_naming_it(bad: float) -> None:
    with pytest.raises(ValueError, match=r"send_timeout must be a finite number of seconds > 0, got "):
        Connection("ws://127.0.0.1:1", on_frame=lambda raw: None, send_timeout=bad)
