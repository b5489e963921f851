"""A-SDK attacks on the client's connection lifecycle, against a real engine: a long outage, concurrent shutdowns,
sync handlers calling back into their own worker."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.connection import backoff_delay_ms
from iii.iii import III
from iii_engine import Engine
from tests.conftest import engine_test_config
from tests.polling import until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_backoff_stays_at_the_cap_however_long_the_outage() -> None:
    # 2.0 ** 1024 has no float: at the default 30 s cap that is about 8.5 h of retrying.
    config = ReconnectionConfig(jitter_factor=0.0)
    assert backoff_delay_ms(config, 1023) == 30000.0
    assert backoff_delay_ms(config, 100_000) == 30000.0
    assert backoff_delay_ms(ReconnectionConfig(initial_delay_ms=0, jitter_factor=0.0), 100_000) == 0.0


@pytest.mark.our_engine("starts an engine on the port the client kept failing to reach")
async def test_client_reconnects_after_more_attempts_than_the_backoff_power_holds() -> None:
    # A multiplier of 10 overflows after 309 attempts (2.0 needs 1024): the same fault, reached in a second.
    port = _free_port()
    fast = ReconnectionConfig(initial_delay_ms=1, max_delay_ms=1, backoff_multiplier=10.0, jitter_factor=0.0)
    client = III(f"ws://127.0.0.1:{port}", InitOptions(worker_name="outage", reconnection_config=fast))
    try:
        await until(lambda: client._conn.failed_attempts > 320, within=10.0)
        async with Engine(config=engine_test_config(), port=port):
            await asyncio.wait_for(client.connect_async(), 10.0)
            assert client.get_connection_state() == "connected"
            assert await client.trigger_async({"function_id": "engine::functions::list", "payload": {}})
    finally:
        await client.shutdown_async()
        client._bridge.stop()


def test_shutdown_from_several_threads_at_once_is_quiet(engine_url: str) -> None:
    # The first caller to stop the loop ended every other caller's shutdown with LoopStoppedError (or "Event loop
    # is closed"): an atexit hook racing a signal handler's shutdown raised.
    errors: list[BaseException] = []
    for _ in range(10):
        client = III(engine_url, InitOptions(worker_name="shut"))
        barrier = threading.Barrier(4)

        def shut(client: III = client, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                client.shutdown()
            except BaseException as exc:  # any error is the fault under test
                errors.append(exc)

        threads = [threading.Thread(target=shut) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not client._bridge.alive
    assert errors == []
