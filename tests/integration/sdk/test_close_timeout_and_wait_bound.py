"""Two SDK hooks ``iii-engine logs|traces|metrics|health --timeout`` needs to end near its deadline, against a server
that completes the WebSocket handshake and then answers nothing, not even a Close:

- ``wait_until_connected_async(within)`` waits for the engine to name the worker within ``within`` too (it waited
  2 s for a ``workerregistered`` that never came, whatever ``within``);
- ``shutdown(close_timeout=…)`` bounds the wait for the answer to the close (2 s before, and no such parameter);

and ``Connection.last_lost``: why the last connection that was up ended (what a wait that saw no connection can say).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iii import InitOptions
from iii.iii import III
from tests.integration.engine.test_inspect_hostile import _mute_after_handshake

from .conftest import FAST_RECONNECT

pytestmark = pytest.mark.timeout(30)


async def test_the_wait_for_a_worker_id_ends_within_the_bound() -> None:
    async with _mute_after_handshake(name_the_worker=False) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        try:
            began = time.monotonic()
            await client.wait_until_connected_async(0.3)  # connected, never named: no error, and not 2 s
            took = time.monotonic() - began
            assert client.get_connection_state() == "connected" and client.worker_id is None
            assert took < 1.0, took
        finally:
            await asyncio.to_thread(client.shutdown, close_timeout=0)


async def test_shutdown_close_timeout_bounds_the_wait_for_an_unanswered_close() -> None:
    async with _mute_after_handshake(name_the_worker=True) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        await client.wait_until_connected_async(5)
        assert client.worker_id == "w-1"
        began = time.monotonic()
        await asyncio.to_thread(client.shutdown, close_timeout=0.2)
        took = time.monotonic() - began
    assert client.get_connection_state() == "disconnected"
    assert 0.2 <= took < 1.5, took  # the default waits 2 s for the server's Close


def test_shutdown_refuses_a_close_timeout_that_is_not_seconds() -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="close_timeout must be a finite number of seconds >= 0"):
                client.shutdown(close_timeout=bad)
    finally:
        client.shutdown()
