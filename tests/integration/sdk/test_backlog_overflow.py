"""Calls made while the engine is unreachable wait in a bounded queue; a call pushed out of it fails at once
(it was never sent) instead of waiting out its timeout, and a fire-and-forget call waits for room instead."""

from __future__ import annotations

import asyncio
import socket

import pytest

from iii import TriggerAction
from iii.errors import ConnectionLostError
from iii.iii import III
from iii.iii_constants import MAX_QUEUE_SIZE
from iii_engine import Engine
from iii_engine.config import EngineConfig
from tests.conftest import engine_test_config
from tests.ports import reserve_port


async def test_a_call_pushed_out_of_the_full_queue_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = III(f"ws://127.0.0.1:{port}")  # nothing listens: every call waits in the outbound queue
    try:
        calls = [asyncio.ensure_future(client.trigger_async({"function_id": f"f::{n}", "payload": n,
                                                                "timeout_ms": 60_000}))
                 for n in range(MAX_QUEUE_SIZE + 2)]
        done, _ = await asyncio.wait(calls, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        first = calls[0]
        assert first in done  # not left to its 60 s timeout
        with pytest.raises(ConnectionLostError, match=r"The call to 'f::0' was never sent: the outbound queue"):
            first.result()
        with pytest.raises(ConnectionLostError, match="'f::1' was never sent"):
            await asyncio.wait_for(calls[1], 10)
        assert not any(c.done() for c in calls[2:])  # the rest still wait for the engine
    finally:
        await client.shutdown_async()
        await asyncio.gather(*calls, return_exceptions=True)


async def test_fire_and_forget_calls_past_the_full_queue_wait_and_all_arrive() -> None:
    """A void call made while the queue is full waits for room instead of pushing an earlier one out unseen."""
    # the port is held from here until the engine listens on it: another test process must not take it meanwhile
    with reserve_port() as reserved:
        port = reserved.getsockname()[1]
        seen: list[int] = []
        every = asyncio.Event()
        total = MAX_QUEUE_SIZE + 5
        client = III(f"ws://127.0.0.1:{port}")

        def count(data: int) -> None:
            seen.append(data)
            if len(seen) == total:
                client_loop.call_soon_threadsafe(every.set)

        client_loop = asyncio.get_running_loop()
        client.register_function("overflow::count", count)  # replayed when the engine comes up
        try:
            fired = [asyncio.ensure_future(client.trigger_async({"function_id": "overflow::count", "payload": n,
                                                                  "action": TriggerAction.Void()}))
                     for n in range(total)]
            waiting = set(fired)
            while len(waiting) > 5:
                done, waiting = await asyncio.wait(waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                assert done, "void calls stopped being queued"
            _, waiting = await asyncio.wait(waiting, timeout=0.2)
            assert len(waiting) == 5  # the queue is full: the last five wait for room
            config = engine_test_config()
            async with Engine(config=EngineConfig(host="127.0.0.1", port=port, modules=config.modules)):
                await asyncio.wait_for(asyncio.gather(*fired), 20)
                await asyncio.wait_for(every.wait(), 20)
            assert sorted(seen) == list(range(total))  # nothing lost, nothing twice
        finally:
            await client.shutdown_async()
