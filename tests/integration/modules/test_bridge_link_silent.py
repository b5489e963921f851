"""A bridge link to a back engine that stops answering (SIGSTOP of its process): calls fail promptly and their errors
say whether the back may have applied them; the link comes back when the back runs again.

Before: a call waited its whole timeout (30 s by default), its error ("invocation timed out after …") did not say it
had been sent, and the back applied it once it ran again (a ``stream::update`` its caller was told had failed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from iii_engine import Engine
from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink
from tests.conftest import EngineProcess
from tests.integration.modules.test_bridge_topology import BACK
from tests.polling import until
from tests.stall_relay import Relay

pytestmark = pytest.mark.our_engine("starts a back engine process and stops it with SIGSTOP")

MAY_HAVE = "it was sent and may have been applied there"
NOT_SENT = "it was not sent, nothing was applied"
ITEM = {"stream_name": "silent", "group_id": "g", "item_id": "i"}


@pytest.fixture
async def back(engine_process: Callable[..., Awaitable[EngineProcess]],
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EngineProcess]:
    monkeypatch.setenv("BRIDGE_BACK_STREAMS_PORT", "0")
    monkeypatch.setenv("III_BIND_HOST", "127.0.0.1")
    process = await engine_process("--config", str(BACK))
    try:
        yield process
    finally:
        if process.process.returncode is None:
            os.kill(process.process.pid, signal.SIGCONT)  # (a stopped process is killed all the same; tidier)


async def test_a_call_that_timed_out_on_a_stopped_back_says_it_may_have_been_applied(back: EngineProcess) -> None:
    link = BridgeLink(back.url, role="test")  # default ping timeout (5 s): the call's own timeout ends first
    link.start()
    try:
        await link.call("stream::set", {**ITEM, "data": {"n": 0}})
        os.kill(back.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BridgeCallError) as timed_out:
                await link.call("stream::update", {**ITEM, "ops": [{"type": "increment", "path": "n", "by": 1}]},
                                timeout_ms=500)
        finally:
            os.kill(back.process.pid, signal.SIGCONT)
        assert str(timed_out.value).startswith(f"invocation timed out after 500 ms (remote engine {back.url}, "
                                               "function stream::update)"), timed_out.value
        assert MAY_HAVE in str(timed_out.value), timed_out.value
        # and so it was: the back read the frame once it ran again (why the error must not say "failed")
        applied: list[object] = []

        async def read() -> None:
            applied.append(await link.call("stream::get", ITEM))

        deadline = time.monotonic() + 10
        while not applied or applied[-1] != {"n": 1}:
            assert time.monotonic() < deadline, applied
            await read()
        # the late answer to the abandoned call was dropped, not kept for a caller that left
        client = link._client
        assert client is not None
        await until(lambda: len(client._calls) == 0 and not client._session._pending, 5)
    finally:
        await link.close()


async def test_a_stopped_back_is_found_by_ping_and_later_calls_are_not_sent(back: EngineProcess) -> None:
    link = BridgeLink(back.url, role="test")
    link.ping_timeout_s = 0.5
    link.start()
    try:
        await link.call("state::set", {"scope": "silent", "key": "k", "value": 1})
        os.kill(back.process.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(BridgeCallError) as lost:  # the default timeout, 30 s, is not what ends it
                await asyncio.wait_for(link.call("state::get", {"scope": "silent", "key": "k"}), 10)
            took = time.monotonic() - began
            assert took < 3.0, f"the call took {took:.1f} s"
            assert str(lost.value).startswith(f"connection to remote engine {back.url} lost during the call of "
                                              "state::get (it answered no ping within 0.5 s: stopped or hung)"), \
                lost.value
            assert MAY_HAVE in str(lost.value), lost.value
            assert not link.connected
            with pytest.raises(BridgeCallError) as unsent:
                await asyncio.wait_for(link.call("state::set", {"scope": "silent", "key": "k", "value": 2}), 10)
            assert str(unsent.value).startswith(f"remote engine {back.url} unreachable"), unsent.value
            assert str(unsent.value).endswith(f"(it answered no ping within 0.5 s: stopped or hung); {NOT_SENT}"), \
                unsent.value
        finally:
            os.kill(back.process.pid, signal.SIGCONT)
        await until(lambda: link.connected, 15)
        assert await link.call("state::get", {"scope": "silent", "key": "k"}) == 1  # the unsent write never ran
        await until(lambda: link.silence is None, 5)  # connected again: later errors do not blame the old silence
    finally:
        await link.close()


async def test_a_remote_slow_to_take_a_big_frame_is_not_taken_for_silent() -> None:
    # Its pong comes after the frame: while bytes of ours are still on their way to it, the ping's timeout does not
    # cut the connection (the SDK's send_timeout judges a remote that takes none of them for 30 s).
    async with Engine(port=0) as engine:
        relay = Relay(engine.port)
        await relay.start()
        link = BridgeLink(relay.url, role="test")
        link.ping_timeout_s = 0.2
        link.start()
        try:
            await link.call("state::set", {"scope": "slow", "key": "k", "value": 0})
            relay.flowing.clear()  # the remote stops taking what the link sends, for ten ping timeouts
            value = "x" * 4_000_000
            big = asyncio.ensure_future(link.call("state::set", {"scope": "slow", "key": "k", "value": value}))
            await asyncio.sleep(2.0)  # (the length of the stall, not a wait for an event)
            assert not big.done(), big
            relay.flowing.set()
            result = await asyncio.wait_for(big, 20)
            assert result == {"old_value": 0, "new_value": value}
            assert link.connected and link.silence is None
        finally:
            await link.close()
            await relay.close()
