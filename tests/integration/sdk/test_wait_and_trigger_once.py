"""Two public calls of ours (beyond the reference SDK), which the engine's bridge uses instead of SDK internals:
``III.wait_until_connected_async`` (a bounded wait for a connection, with a clear error) and
``III.trigger_once_async`` (a void call sent on the connection up now, never on a later one)."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from typing import Any

import pytest

from iii import InitOptions, TriggerAction
from iii.errors import ShuttingDownError
from iii.iii import III
from tests.polling import until

from .conftest import FAST_RECONNECT, EngineThread, reconnected

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def void_calls(fake: EngineThread, function_id: str) -> list[dict[str, Any]]:
    """Every ``invokefunction`` frame of ``function_id`` the engine got, on any connection."""
    return [msg for _, msg in list(fake.engine.all_frames)
            if msg.get("type") == "invokefunction" and msg.get("function_id") == function_id]


# ---------------------------------------------------------------- wait_until_connected_async


async def test_wait_until_connected_returns_at_once_when_connected(client: III) -> None:
    began = time.monotonic()
    await client.wait_until_connected_async(5)
    assert time.monotonic() - began < 1.0
    assert client.get_connection_state() == "connected" and client.worker_id is not None


async def test_wait_until_connected_raises_a_connection_error_naming_the_engine_after_the_bound() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    client = III(url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        began = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"cannot reach the engine at {url} within 0\.3 s \(\d+ attempt"):
            await client.wait_until_connected_async(0.3)
        assert time.monotonic() - began < 3.0
    finally:
        await client.shutdown_async()


async def test_wait_until_connected_returns_once_the_engine_comes_up(fake: EngineThread) -> None:
    await asyncio.to_thread(fake.stop)
    client = III(fake.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        waiting = asyncio.ensure_future(client.wait_until_connected_async(10))
        await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.to_thread(fake.start)
        await asyncio.wait_for(waiting, 10)
        assert client.get_connection_state() == "connected"
    finally:
        await client.shutdown_async()


async def test_wait_until_connected_raises_shutting_down_during_and_after_a_shutdown() -> None:
    client = III(f"ws://127.0.0.1:{free_port()}", InitOptions(reconnection_config=FAST_RECONNECT))
    waiting = asyncio.ensure_future(client.wait_until_connected_async(20))
    await asyncio.sleep(0)  # handed to the client's loop (waiting there or not yet: it must end either way)
    await client.shutdown_async()
    with pytest.raises(ShuttingDownError):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ShuttingDownError):
        await client.wait_until_connected_async(1)


@pytest.mark.parametrize("within", [-1, math.nan, math.inf, True, "1"])
async def test_wait_until_connected_refuses_a_bound_that_is_none(client: III, within: Any) -> None:
    with pytest.raises(ValueError, match="within must be a finite number of seconds >= 0"):
        await client.wait_until_connected_async(within)


async def test_wait_until_connected_works_from_an_async_handler(client: III) -> None:
    async def check(data: Any) -> str:
        await client.wait_until_connected_async(1)
        return client.get_connection_state()

    client.register_function("check", check)
    assert await client.trigger_async({"function_id": "check", "payload": None}) == "connected"


# ---------------------------------------------------------------- trigger_once_async


async def test_trigger_once_is_written_as_a_void_call(fake: EngineThread, client: III) -> None:
    assert await client.trigger_once_async({"function_id": "sink", "payload": {"n": 1}}) is True
    assert await client.trigger_once_async({"function_id": "sink", "payload": {"n": 2},
                                            "action": TriggerAction.Void()}) is True
    await client.list_functions_async()  # a round trip: both were handled
    calls = void_calls(fake, "sink")
    assert [c["data"] for c in calls] == [{"n": 1}, {"n": 2}]
    assert all(c.get("action") == {"type": "void"} and c.get("invocation_id") is None for c in calls)


async def test_trigger_once_while_disconnected_is_not_sent_then_or_on_the_next_connection(
        fake: EngineThread, client: III) -> None:
    # trigger() with a void action queues it for the next connection; this one must never send it.
    old = client.worker_id
    await asyncio.to_thread(fake.stop)
    await until(lambda: client.get_connection_state() != "connected")
    assert await client.trigger_once_async({"function_id": "sink", "payload": "late"}) is False
    await asyncio.to_thread(fake.start)
    await until(lambda: reconnected(client, old))
    assert await client.trigger_once_async({"function_id": "sink", "payload": "now"}) is True
    await client.list_functions_async()
    assert [c["data"] for c in void_calls(fake, "sink")] == ["now"]


async def test_trigger_once_refuses_an_answered_action_and_a_shut_down_client(client: III) -> None:
    with pytest.raises(ValueError, match="trigger_once_async sends a void call"):
        await client.trigger_once_async({"function_id": "sink", "payload": 1,
                                         "action": TriggerAction.Enqueue(queue="q")})
    await client.shutdown_async()
    with pytest.raises(ShuttingDownError):
        await client.trigger_once_async({"function_id": "sink", "payload": 1})


async def test_trigger_once_works_from_an_async_handler(fake: EngineThread, client: III) -> None:
    async def relay(data: Any) -> bool:
        return await client.trigger_once_async({"function_id": "sink", "payload": data})

    client.register_function("relay", relay)
    assert await client.trigger_async({"function_id": "relay", "payload": "via handler"}) is True
    await client.list_functions_async()
    assert [c["data"] for c in void_calls(fake, "sink")] == ["via handler"]
