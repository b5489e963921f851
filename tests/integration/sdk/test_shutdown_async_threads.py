"""``III.shutdown_async`` ends the client's threads as ``shutdown()`` does: called from a loop of the user's, it stops
the private loop and joins its thread; called from the client's own loop (an async handler), the loop thread ends
once the handler has.

Before: from another loop it only disconnected; the private loop thread (and its loop's executor thread) ran on until
the process ended. Only ``shutdown()`` and ``async with III`` stopped them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from iii import InitOptions, TriggerAction
from iii.iii import III

from .conftest import FAST_RECONNECT, EngineThread

pytestmark = pytest.mark.timeout(30)

THREADS_END_WITHIN_S = 5.0


async def threads_left(before: set[threading.Thread]) -> list[str]:
    """The names of the threads started since ``before`` still running after a bounded wait for each to end (the
    handler pool is shut down without waiting: its idle threads end just after)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + THREADS_END_WITHIN_S
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        await asyncio.to_thread(thread.join, max(0.0, deadline - loop.time()))
    return [t.name for t in started if t.is_alive()]


async def connected_client(fake: EngineThread) -> III:
    client = III(fake.url, InitOptions(worker_name="shutdown", reconnection_config=FAST_RECONNECT))
    await client.connect_async()
    return client


async def test_from_another_loop_it_ends_every_thread_the_client_started(fake: EngineThread) -> None:
    await asyncio.to_thread(lambda: None)  # this loop's own executor thread, started before the count
    before = set(threading.enumerate())
    client = await connected_client(fake)
    client.register_function("sync_echo", lambda data: data)  # a handler thread, and telemetry's threads
    assert await client.trigger_async({"function_id": "sync_echo", "payload": 1}) == 1
    await client.shutdown_async()
    assert await threads_left(before) == []
    assert not client._bridge.alive and client._bridge.loop.is_closed()
    await client.shutdown_async()  # again: nothing left to do
    client.shutdown()


async def test_a_cancelled_shutdown_async_still_ends_the_loop_thread(fake: EngineThread) -> None:
    client = await connected_client(fake)
    shutting = asyncio.ensure_future(client.shutdown_async())
    await asyncio.sleep(0)  # started: handed to the client's loop
    shutting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shutting
    await asyncio.to_thread(client._bridge.thread.join, THREADS_END_WITHIN_S)
    assert not client._bridge.alive
    assert client.get_connection_state() == "disconnected"


async def test_from_an_async_handler_the_loop_thread_ends_once_the_handler_has(fake: EngineThread) -> None:
    client = await connected_client(fake)
    returned = threading.Event()

    async def stop(data: Any) -> None:
        await client.shutdown_async()
        assert client.get_connection_state() == "disconnected"  # disconnected by the time it returns
        assert client._bridge.alive  # the handler's own loop: still running it
        returned.set()

    client.register_function("stop", stop)
    await client.trigger_async({"function_id": "stop", "payload": {}, "action": TriggerAction.Void()})
    await asyncio.to_thread(client._bridge.thread.join, THREADS_END_WITHIN_S)
    assert returned.is_set()
    assert not client._bridge.alive and client._bridge.loop.is_closed()
    client.shutdown()  # a no-op now
    await client.shutdown_async()
