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


class SlowRelay(Relay):
    """:class:`Relay` whose pumps pass at most ``rate`` bytes a second, each way its own (``None``: at full speed):
    ``to_back`` what the link sends, ``to_front`` what the remote answers (a slow link)."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.to_back: int | None = None
        self.to_front: int | None = None

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool) -> None:
        paced = _Paced(writer, lambda: self.to_back if gated else self.to_front)
        await super()._pump(reader, paced, gated=gated)  # type: ignore[arg-type]  # (what _pump uses of a writer)


class _Paced:
    """A writer whose ``drain`` also waits as long as the bytes written since the last one take at ``rate()``."""

    def __init__(self, writer: asyncio.StreamWriter, rate: Callable[[], int | None]) -> None:
        self.writer, self.rate, self.transport = writer, rate, writer.transport
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()
        written, self.written = self.written, 0
        rate = self.rate()
        if rate is not None:
            await asyncio.sleep(written / rate)  # (the pace of the link, not a wait for an event)


@pytest.fixture
async def slow_relay() -> AsyncIterator[SlowRelay]:
    async with Engine(port=0) as engine:
        relay = SlowRelay(engine.port)
        await relay.start()
        try:
            yield relay
        finally:
            await relay.close()


async def test_a_big_answer_coming_slowly_is_not_taken_for_silence(slow_relay: SlowRelay) -> None:
    # The remote's pong waits behind the answer it is sending: bytes arriving from it prove it alive. Before, only
    # bytes of ours unacknowledged did: a 1 MB answer over a 400 KB/s link was cut at every attempt ("answered no
    # ping within 0.5 s"), a 3 MB one at 500 KB/s with the default 5 s timeout the same way.
    link = BridgeLink(slow_relay.url, role="test")
    link.ping_timeout_s = 0.5
    link.start()
    try:
        value = "x" * 1_000_000
        await link.call("state::set", {"scope": "slow", "key": "k", "value": value})
        slow_relay.to_front = 400_000
        began = time.monotonic()
        assert await link.call("state::get", {"scope": "slow", "key": "k"}, timeout_ms=20_000) == value
        took = time.monotonic() - began
        assert took > 4 * link.ping_timeout_s, f"the answer came in {took:.1f} s: not slow enough to test anything"
        assert link.connected and link.silence is None
    finally:
        await link.close()


async def test_a_remote_slow_to_take_a_big_frame_is_not_taken_for_silence(slow_relay: SlowRelay) -> None:
    # Its pong comes after the frame: while the remote keeps acknowledging bytes of ours, it is alive.
    link = BridgeLink(slow_relay.url, role="test")
    link.ping_timeout_s = 0.3
    link.start()
    try:
        await link.call("state::set", {"scope": "slow", "key": "k", "value": 0})
        slow_relay.to_back = 1_000_000
        value = "x" * 2_000_000
        began = time.monotonic()
        result = await link.call("state::set", {"scope": "slow", "key": "k", "value": value}, timeout_ms=20_000)
        took = time.monotonic() - began
        assert result == {"old_value": 0, "new_value": value}
        assert took > 4 * link.ping_timeout_s, f"the frame went in {took:.1f} s: not slow enough to test anything"
        assert link.connected and link.silence is None
    finally:
        await link.close()


async def test_a_remote_that_takes_none_of_a_big_frame_is_found_by_ping(slow_relay: SlowRelay) -> None:
    # Progress, not a count: bytes of ours unacknowledged for a whole ping timeout, none taken meanwhile, no byte
    # from the remote, is a stopped remote. Before, any unacknowledged byte kept the connection: a back SIGSTOPped
    # with 4 x 2 MB on their way held every call, a later small one too, for its whole timeout (25 s).
    link = BridgeLink(slow_relay.url, role="test")
    link.ping_timeout_s = 0.5
    link.start()
    try:
        await link.call("state::set", {"scope": "slow", "key": "k", "value": 0})
        slow_relay.flowing.clear()  # the remote takes nothing more, for good
        began = time.monotonic()
        with pytest.raises(BridgeCallError) as lost:
            await asyncio.wait_for(link.call("state::set", {"scope": "slow", "key": "k", "value": "x" * 4_000_000},
                                             timeout_ms=20_000), 10)
        took = time.monotonic() - began
        assert "lost during the call of state::set (it answered no ping within 0.5 s: stopped or hung)" in \
            str(lost.value), lost.value
        assert MAY_HAVE in str(lost.value), lost.value
        assert took < 5.0, f"found after {took:.1f} s"
    finally:
        await link.close()


async def test_a_call_told_not_sent_is_never_written_even_if_the_remote_comes_back_meanwhile(
        back: EngineProcess) -> None:
    # "Not sent" is decided on the SDK client's loop, where frames are written: the call's frame is taken out of its
    # queue there, in the same step. Before, the link decided on the engine's loop and the frame left the queue only
    # when the call's cancellation reached the client's loop: an engine loop busy meanwhile (held 2 s here, past the
    # SDK's 2 s reconnect pause) let the new connection write it, and the back applied a write its caller was told
    # had not been sent.
    link = BridgeLink(back.url, role="test", connect_grace_s=1.0)  # well under the SDK's 2 s reconnect pause
    link.ping_timeout_s = 0.5
    link.start()
    try:
        await link.call("state::set", {"scope": "race", "key": "k", "value": 0})
        client = link._client
        assert client is not None
        os.kill(back.process.pid, signal.SIGSTOP)
        try:
            # the back takes nothing: the small call queues in the SDK behind the big ones, unwritten
            big = [asyncio.ensure_future(link.call("state::set", {"scope": "race", "key": f"big{i}",
                                                                  "value": "x" * 4_000_000}, timeout_ms=20_000))
                   for i in range(4)]
            await asyncio.sleep(0.1)  # (time for the big frames to fill the socket, not a wait for an event)
            small = asyncio.ensure_future(link.call("state::set", {"scope": "race", "key": "k", "value": 1},
                                                    timeout_ms=20_000))
            await until(lambda: bool(client._conn.queued_keys()), 5)
            await until(lambda: link.silence is not None, 10)  # the ping dropped the connection
        finally:
            os.kill(back.process.pid, signal.SIGCONT)  # the SDK's next connection (2 s after the drop) goes through
        watch = link._watches[asyncio.get_running_loop()]
        assert watch.outage is not None and not small.done()
        # the engine's loop is held (a busy engine) from the moment the link says "not sent" until past the reconnect
        watch.outage.add_done_callback(lambda _: time.sleep(2.0))
        told: dict[str, str] = {}
        for key, call in [*((f"big{i}", c) for i, c in enumerate(big)), ("k", small)]:
            with pytest.raises(BridgeCallError) as failed:
                await asyncio.wait_for(call, 10)
            told[key] = str(failed.value)
        assert NOT_SENT in told["k"], told["k"]
        await until(lambda: link.connected, 10)
        for key, error in told.items():
            if NOT_SENT in error:  # a call told "not sent" was never applied, now that the back runs again
                never_applied = await link.call("state::get", {"scope": "race", "key": key}) in (0, None)
                assert never_applied, f"{key} was applied, its caller told: {error}"
            else:
                assert MAY_HAVE in error, error
    finally:
        await link.close()


async def test_an_idle_link_to_a_stopped_back_is_unhealthy_within_the_probe_timeout(back: EngineProcess) -> None:
    from iii_engine.modules.health import PROBE_TIMEOUT_S, link_health

    link = BridgeLink(back.url, role="test")
    link.ping_interval_s = 0.2
    link.start()
    try:
        await link.call("state::set", {"scope": "silent", "key": "k", "value": 1})
        assert (await link_health(link))["status"] == "healthy"
        os.kill(back.process.pid, signal.SIGSTOP)
        try:
            # a ping answered under ping_interval_s ago stands: the check after it pings again
            await asyncio.sleep(link.ping_interval_s)
            began = time.monotonic()
            found = await link_health(link)
            took = time.monotonic() - began
        finally:
            os.kill(back.process.pid, signal.SIGCONT)
        # before: healthy (the link connected, nothing in flight, so nothing pinged) for 50 s
        assert found["status"] == "unhealthy", found
        assert found["details"]["error"].startswith("the remote engine did not answer a ping: no answer within 2 s"), \
            found
        assert took < PROBE_TIMEOUT_S + 1.0, took
        await until(lambda: link.connected, 10)
        assert (await link_health(link))["status"] == "healthy"
    finally:
        await link.close()


async def test_frequent_health_checks_do_not_keep_a_stopped_back_connected(back: EngineProcess) -> None:
    from iii_engine.modules.health import link_health

    link = BridgeLink(back.url, role="test")  # the default ping timeout, 5 s
    link.start()
    try:
        await link.call("state::set", {"scope": "silent", "key": "k", "value": 1})
        os.kill(back.process.pid, signal.SIGSTOP)
        try:
            call = asyncio.ensure_future(link.call("state::get", {"scope": "silent", "key": "k"}))
            began = time.monotonic()
            checks: list[asyncio.Future[object]] = []
            while not call.done():  # a health check every 0.05 s, not waiting for the last, as busy monitors might
                checks.append(asyncio.ensure_future(link_health(link)))
                await asyncio.wait({call}, timeout=0.05)
                assert time.monotonic() - began < 14, "the call still waits after 14 s of health checks"
            await asyncio.gather(*checks)
            # before: the checks' own pings were acknowledged by the stopped back's kernel, which the keepalive took
            # for life, and the call waited past 15 s (5 of 6 runs); now 10 s (the call's frame, acknowledged by
            # that kernel, gives a ping under way one more ping_timeout)
            with pytest.raises(BridgeCallError, match="it answered no ping within 5 s"):
                await call
        finally:
            os.kill(back.process.pid, signal.SIGCONT)
    finally:
        await link.close()
