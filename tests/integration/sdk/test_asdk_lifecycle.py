"""A-SDK attacks on the client's connection lifecycle, against a real engine: a long outage, concurrent shutdowns,
sync handlers calling back into their own worker."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.connection import backoff_delay_ms
from iii.handler_threads import default_limit
from iii.iii import III, register_worker
from iii_engine import Engine
from tests.conftest import engine_test_config
from tests.polling import until
from tests.ports import reserve_port


def test_backoff_stays_at_the_cap_however_long_the_outage() -> None:
    # 2.0 ** 1024 has no float: at the default 30 s cap that is about 8.5 h of retrying.
    config = ReconnectionConfig(jitter_factor=0.0)
    assert backoff_delay_ms(config, 1023) == 30000.0
    assert backoff_delay_ms(config, 100_000) == 30000.0
    assert backoff_delay_ms(ReconnectionConfig(initial_delay_ms=0, jitter_factor=0.0), 100_000) == 0.0


@pytest.mark.our_engine("starts an engine on the port the client kept failing to reach")
async def test_client_reconnects_after_more_attempts_than_the_backoff_power_holds() -> None:
    # A multiplier of 10 overflows after 309 attempts (2.0 needs 1024): the same fault, reached in a second.
    # the port is held from here until the engine listens on it: another test process must not take it meanwhile
    with reserve_port() as reserved:
        port = reserved.getsockname()[1]
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


async def test_shutdown_from_several_threads_at_once_is_quiet(engine_url: str) -> None:
    # The first caller to stop the loop ended every other caller's shutdown with LoopStoppedError (or "Event loop
    # is closed"): an atexit hook racing a signal handler's shutdown raised. (Threads: the engine runs on this loop.)
    gc.collect()  # what earlier tests left is not this test's to report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await asyncio.to_thread(_shut_down_from_threads, engine_url)
        gc.collect()
    # A shutdown handed to a loop that stopped before running it was a coroutine never awaited.
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def _shut_down_from_threads(engine_url: str) -> None:
    errors: list[BaseException] = []
    for _ in range(20):
        client = register_worker(engine_url, InitOptions(worker_name="shut"))
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


async def test_sync_handlers_calling_sync_handlers_of_their_own_worker_never_starve(engine_url: str) -> None:
    # On the loop's default executor (min(32, cpu + 4) threads) this many outer calls held every thread while they
    # waited for inner invocations queued behind them: every call failed after its timeout.
    await asyncio.to_thread(_nested_sync_calls, engine_url)


def _nested_sync_calls(engine_url: str) -> None:
    calls = 3 * default_limit()
    options = InitOptions(worker_name="nest")
    with register_worker(engine_url, options) as server, register_worker(engine_url, options) as caller:
        server.register_function("asdk.inner", lambda data: {"inner": data})
        server.register_function(
            "asdk.outer", lambda data: server.trigger({"function_id": "asdk.inner", "payload": data,
                                                       "timeout_ms": 3000}))
        server.trigger({"function_id": "asdk.outer", "payload": -1, "timeout_ms": 3000})  # (both registered)
        with ThreadPoolExecutor(calls) as pool:
            results = list(pool.map(
                lambda i: caller.trigger({"function_id": "asdk.outer", "payload": i, "timeout_ms": 4000}),
                range(calls)))
        assert results == [{"inner": i} for i in range(calls)]
