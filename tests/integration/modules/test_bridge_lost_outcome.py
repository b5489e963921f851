"""A bridged call whose connection is cut after the remote received it may well have run there: the error must say
so. Worded like a call that never left ("lost"), a caller retried it and the job ran twice (of 200 topic enqueues
through a cut link, 37 answered ``enqueue_error`` were delivered all the same)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii import III
from iii_engine import Engine
from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink
from tests.stall_relay import Relay


async def test_a_call_cut_after_the_remote_got_it_says_it_may_have_run() -> None:
    async with Engine(port=0) as back:
        worker = III(back.url)
        await worker.connect_async()
        relay = Relay(back.port)
        await relay.start()
        link = BridgeLink(relay.url, role="test")
        ran = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def slow(data: Any) -> Any:
            loop.call_soon_threadsafe(ran.set)  # the worker's handler runs on its own loop
            await asyncio.sleep(30)
            return data

        worker.register_function({"id": "back.slow"}, slow)
        try:
            link.start()
            call = asyncio.ensure_future(link.call("back.slow", {"n": 1}, timeout_ms=20_000))
            await asyncio.wait_for(ran.wait(), 15)
            relay.cut()
            with pytest.raises(BridgeCallError) as lost:
                await asyncio.wait_for(call, 10)
            assert str(lost.value).startswith(f"connection to remote engine {relay.url} lost during the call of "
                                              "back.slow"), lost.value
            assert "it was sent and may have been applied there" in str(lost.value), lost.value
        finally:
            await link.close()
            await relay.close()
            await worker.shutdown_async()
