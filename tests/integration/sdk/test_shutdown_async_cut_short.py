"""``III.shutdown_async`` whose caller goes away half-way still shuts the client down and ends its loop thread.

A caller cancelled half-way (a deadline around ``async with III(...)``, Ctrl-C) is usually followed by the end of its
loop: ``asyncio.run`` then cancels every task left, the shutdown's own shielded one too. Before, that cancel went on
into the shutdown running on the client's loop: the client was left marked shut down (every call refused) yet still
connected, its functions still routed to it by the engine, and its loop thread running until the process ended.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from typing import Any

import pytest

from iii import InitOptions, TriggerAction
from iii.errors import ShuttingDownError
from iii.iii import III
from iii.loop_bridge import LoopBridge, LoopStoppedError

from .conftest import FAST_RECONNECT, EngineThread

pytestmark = pytest.mark.timeout(30)

THREAD_ENDS_WITHIN_S = 5.0


def test_a_shutdown_cancelled_then_its_loop_closed_still_disconnects_and_ends_the_loop_thread(
        fake: EngineThread) -> None:
    async def cancelled_at_the_end() -> III:
        client = III(fake.url, InitOptions(worker_name="cut", reconnection_config=FAST_RECONNECT))
        await client.connect_async()
        client.register_function("cut::f", lambda data: data)
        await client.list_functions_async()  # a round trip: the registration reached the engine
        shutting = asyncio.ensure_future(client.shutdown_async())
        await asyncio.sleep(0)  # handed to the client's loop
        shutting.cancel()
        return client  # asyncio.run now cancels the shutdown's own task, then closes this loop

    client = asyncio.run(cancelled_at_the_end())
    client._bridge.thread.join(THREAD_ENDS_WITHIN_S)
    assert not client._bridge.alive, "the client's loop thread still runs after its shutdown's caller went away"
    assert client._bridge.loop.is_closed()
    assert client.get_connection_state() == "disconnected"
    fake.wait_for(lambda: not fake.engine.workers and "cut::f" not in fake.engine.functions)
    client.shutdown()  # a no-op now


async def test_a_handler_whose_shutdown_async_is_cut_short_still_ends_the_client(fake: EngineThread) -> None:
    client = III(fake.url, InitOptions(worker_name="cut", reconnection_config=FAST_RECONNECT))
    await client.connect_async()
    outcome: list[str] = []

    async def stop(data: Any) -> None:
        try:
            async with asyncio.timeout(0):  # the handler's own deadline expires at the shutdown's first wait
                await client.shutdown_async()
        except TimeoutError:
            outcome.append("cut short")

    client.register_function("stop", stop)
    await client.trigger_async({"function_id": "stop", "payload": {}, "action": TriggerAction.Void()})
    await asyncio.to_thread(client._bridge.thread.join, THREAD_ENDS_WITHIN_S)
    assert outcome == ["cut short"]
    assert not client._bridge.alive, "a handler's shutdown_async cut short left the client's loop thread running"
    assert client.get_connection_state() == "disconnected"
    await asyncio.to_thread(fake.wait_for, lambda: not fake.engine.workers)


async def test_run_async_on_a_closed_loop_says_the_loop_stopped() -> None:
    # (a call racing a shutdown that closed the loop between the call's own check and its hop onto the loop)
    bridge = LoopBridge()
    bridge.stop()

    async def never() -> int:
        return 1

    gc.collect()  # what earlier tests left is not this test's to report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(LoopStoppedError):
            await bridge.run_async(never())
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    assert issubclass(LoopStoppedError, ShuttingDownError)


@pytest.mark.parametrize("outside", ["shutdown_async", "shutdown"])
async def test_a_shutdown_from_elsewhere_lets_a_handler_that_shut_the_client_down_finish(
        fake: EngineThread, caplog: pytest.LogCaptureFixture, outside: str) -> None:
    client = III(fake.url, InitOptions(worker_name="cut", reconnection_config=FAST_RECONNECT))
    await client.connect_async()
    shut = threading.Event()
    finished = threading.Event()

    async def stop(data: Any) -> None:
        await client.shutdown_async()
        shut.set()
        await asyncio.sleep(0.2)  # the handler's remaining work, after its client's shutdown
        finished.set()

    client.register_function("stop", stop)
    await client.trigger_async({"function_id": "stop", "payload": {}, "action": TriggerAction.Void()})
    assert await asyncio.to_thread(shut.wait, THREAD_ENDS_WITHIN_S)
    if outside == "shutdown_async":
        await client.shutdown_async()  # from this loop, while the handler still runs
    else:
        await asyncio.to_thread(client.shutdown)  # from another thread, the same
    assert finished.is_set(), "the loop was stopped under the handler"
    assert not client._bridge.alive
    assert "Task was destroyed but it is pending" not in caplog.text
