"""``III`` as a context manager (issue #11): ``with`` and ``async with`` shut the client down on exit."""

from __future__ import annotations

import asyncio

import pytest

import iii
from iii import III, register_worker

from .conftest import Harness


def test_with_block_shuts_down_on_exit_even_after_an_error(served: Harness) -> None:
    with pytest.raises(LookupError), register_worker(served.url) as client:
        client.register_function("cm::echo", lambda data: data["n"])
        assert client.trigger({"function_id": "cm::echo", "payload": {"n": 1}}) == 1
        raise LookupError("leave the block")
    assert client.get_connection_state() == "disconnected"
    assert not client._bridge.alive  # the private loop thread is gone
    with pytest.raises(iii.ShuttingDownError):
        asyncio.run(client.trigger_async({"function_id": "cm::echo", "payload": {"n": 2}}))


async def test_async_with_block_shuts_down_on_exit(served: Harness) -> None:
    async with III(served.url) as client:
        await client.connect_async()
        client.register_function("cm::async_echo", lambda data: data)
        assert await client.trigger_async({"function_id": "cm::async_echo", "payload": 2}) == 2
    assert client.get_connection_state() == "disconnected"
    assert not client._bridge.alive
