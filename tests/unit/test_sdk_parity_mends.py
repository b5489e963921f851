"""SDK mends: ``shutdown_async(close_timeout=…)`` as ``shutdown`` has it, one check of ``close_timeout`` for both.

Why: ``shutdown(close_timeout=…)`` bounded the wait for the engine's answer to the WebSocket close, and
``shutdown_async`` had no such keyword (an async short-lived client waited 2 s for a server that never answered);
``shutdown(close_timeout="0.25")`` raised a bare ``TypeError`` from a comparison where every other wait of the SDK
raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.iii import III
from tests.integration.engine.test_inspect_hostile import _mute_after_handshake

pytestmark = pytest.mark.timeout(30)

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=200, jitter_factor=0.0)


async def _shutdown_async_took(close_timeout: float | None) -> float:
    """Seconds ``shutdown_async`` takes against a server that completed the handshake and never answers the close."""
    async with _mute_after_handshake(name_the_worker=True) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        await client.wait_until_connected_async(5)
        assert client.worker_id == "w-1"
        began = time.monotonic()
        if close_timeout is None:
            await client.shutdown_async()
        else:
            await client.shutdown_async(close_timeout=close_timeout)
        took = time.monotonic() - began
    assert client.get_connection_state() == "disconnected"
    return took


async def test_shutdown_async_close_timeout_bounds_the_wait_for_an_unanswered_close() -> None:
    took = await _shutdown_async_took(0.25)
    assert 0.25 <= took < 1.0, took


async def test_shutdown_async_waits_the_default_2_s_without_close_timeout() -> None:
    took = await _shutdown_async_took(None)
    assert 1.9 <= took < 4.0, took


async def test_shutdown_async_close_timeout_from_the_clients_own_loop() -> None:
    # An async handler of the client shutting it down: the bound reaches the shutdown run on the client's loop too.
    async with _mute_after_handshake(name_the_worker=True) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        await client.wait_until_connected_async(5)

        async def from_its_loop() -> float:
            began = time.monotonic()
            await client.shutdown_async(close_timeout=0.25)
            return time.monotonic() - began

        took = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(from_its_loop(), client._loop))
        await asyncio.to_thread(client._bridge.thread.join, 5)
    assert 0.25 <= took < 1.0, took
    assert not client._bridge.alive


BAD = [-1.0, float("nan"), float("inf"), -float("inf"), "0.25", True]


@pytest.mark.parametrize("bad", BAD, ids=repr)
async def test_shutdown_and_shutdown_async_refuse_the_same_bad_close_timeouts(bad: object) -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        expected = f"close_timeout must be a finite number of seconds >= 0, got {bad!r}"
        with pytest.raises(ValueError) as sync_error:
            await asyncio.to_thread(client.shutdown, close_timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError) as async_error:
            await client.shutdown_async(close_timeout=bad)  # type: ignore[arg-type]
        assert str(sync_error.value) == str(async_error.value) == expected
        assert client._bridge.alive  # refused before anything was shut down
    finally:
        await client.shutdown_async()


async def test_a_huge_int_close_timeout_is_a_long_bound_not_an_overflow() -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    await client.shutdown_async(close_timeout=10**400)  # nothing to close: returns at once
    assert not client._bridge.alive
