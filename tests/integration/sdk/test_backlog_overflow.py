"""Calls made while the engine is unreachable wait in a bounded queue; a call pushed out of it fails at once
(it was never sent) instead of waiting out its timeout."""

from __future__ import annotations

import asyncio
import socket

import pytest

from iii.errors import ConnectionLostError
from iii.iii import III
from iii.iii_constants import MAX_QUEUE_SIZE


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
