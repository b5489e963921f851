"""``BridgeLink.fire`` against a remote that stopped reading for longer than ``send_timeout``, and many fires during a
storm of reconnections: a fire runs on the remote at most once, a fire reported "not sent" never runs, and a fire
that returned normally was not thrown away by the client itself."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from polling import until
from stall_relay import Relay

from iii import InitOptions
from iii.connection import Connection
from iii.iii import III, register_worker
from iii.iii_constants import ReconnectionConfig
from iii.telemetry_types import OtelConfig
from iii_engine import Engine
from iii_engine.modules.bridge import link as link_module
from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink
from tests.unit.modules.test_hbr_bridge_fire_backlog import SCOPE, client_of, on_client_loop, send_fillers_until, stored

pytestmark = pytest.mark.timeout(30)

SEND_TIMEOUT_S = 0.3
FAST_RETRY = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=20, backoff_multiplier=1.0, jitter_factor=0.0,
                                max_retries=-1)


async def linked(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> BridgeLink:
    monkeypatch.setattr(link_module, "_RETRY", FAST_RETRY)  # reconnect in 20 ms, not production's 2 s
    link = BridgeLink(relay.url, role="rbr", connect_grace_s=0.5)
    link.start()
    await until(lambda: link.connected)
    return link


async def stuck_with_nothing_queued(client: III) -> None:
    """On the client's loop: frames are sent until the socket's buffer is over its limit and the flusher waits for
    it to drain with the backlog empty (the next frame sent goes straight to the stalled socket's buffer)."""
    def stuck(conn: Connection) -> bool:
        return not conn._backlog and conn._flusher is not None and not conn._flusher.done()

    if not await send_fillers_until(client, stuck, 0.002):
        raise AssertionError("the link's socket never backed up behind the stalled relay")


async def test_a_fire_into_a_stalled_socket_with_nothing_queued_is_not_reported_sent_when_the_socket_is_dropped(
        relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: with the backlog empty, fire's frame was written into the socket's full buffer at once and fire waited
    # for the buffer to drain; at send_timeout the socket was dropped with the frame still in the buffer, and fire
    # returned as if sent. The frame never left the client: a silent loss.
    link = await linked(relay, monkeypatch)
    try:
        client = client_of(link)
        client._conn._send_timeout = SEND_TIMEOUT_S
        relay.flowing.clear()  # the remote stops reading
        await on_client_loop(client, stuck_with_nothing_queued(client))
        first = client._conn._ws
        with pytest.raises(BridgeCallError, match=r"not sent to remote engine .*: the connection dropped before "
                                                  r"it was written"):
            await asyncio.wait_for(link.fire("state::set", {"scope": SCOPE, "key": "stuck", "value": 1}), 10)
        assert client._conn._ws is not first  # dropped for send_timeout
        relay.flowing.set()
        await until(lambda: link.connected)
        await link.fire("state::set", {"scope": SCOPE, "key": "after", "value": 2})
        assert await stored(link, "after") == 2
        assert await stored(link, "stuck") is None  # and it did not run later either
    finally:
        relay.flowing.set()
        await link.close()


async def test_many_fires_during_a_reconnection_storm_run_at_most_once_and_not_sent_ones_never(
        relay: Relay, remote: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: Counter[int] = Counter()
    worker = await asyncio.to_thread(register_worker, remote.url, InitOptions(
        worker_name="rbr-counter", enable_metrics_reporting=False, otel=OtelConfig(enabled=False)))

    async def count(data: Any) -> None:
        ran[int(data["n"])] += 1

    worker.register_function({"id": "rbr::count"}, count)
    link = await linked(relay, monkeypatch)
    rng = random.Random(7)
    returned: set[int] = set()
    not_sent: set[int] = set()
    stop = asyncio.Event()

    async def firer(first: int) -> None:
        n = first
        while not stop.is_set():
            try:
                await link.fire("rbr::count", {"n": n, "pad": "p" * rng.choice((0, 0, 4000))})
                returned.add(n)
            except BridgeCallError:
                not_sent.add(n)
            n += 1
            if rng.random() < 0.3:
                await asyncio.sleep(0.001)

    try:
        await until(lambda: "rbr::count" in remote.registry.functions)
        firers = [asyncio.ensure_future(firer(i * 1_000_000)) for i in range(8)]
        for _ in range(20):
            await asyncio.sleep(rng.uniform(0.01, 0.08))
            relay.cut()
            await until(lambda: link.connected)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*firers), 15)
        # the last cut may not be seen yet (link.connected still the old connection's): a marker reported not sent
        # never runs, so it is fired again on the next connection
        for _ in range(50):
            try:
                await link.fire("rbr::count", {"n": -1})
                break
            except BridgeCallError:
                await until(lambda: link.connected)
        await until(lambda: ran[-1] == 1)
        await asyncio.sleep(0.2)  # late executions of earlier fires, if any, would show as counts > 1
        assert all(times == 1 for times in ran.values()), "a fire ran more than once"
        assert not set(ran) & not_sent, "a fire reported not sent ran on the remote"
        lost = returned - set(ran)
        print(f"fires: {len(returned)} returned, {len(not_sent)} not sent, {len(ran) - 1} ran, {len(lost)} returned "
              f"and did not run (in flight at a cut)")
        # fires in flight at a cut are lost, as any fire-and-forget frame: how many depends on the machine's load
        # (under 10 % on a quiet one, 14 % seen under a loaded CI run); most of what returned must still have run
        assert returned and not_sent and len(lost) <= len(returned) // 3
    finally:
        stop.set()
        await link.close()
        await asyncio.to_thread(worker.shutdown)


async def test_fire_after_close_is_refused_as_shut_down(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    link = await linked(relay, monkeypatch)
    assert link._client is not None
    await link.close()
    with pytest.raises(BridgeCallError, match=r"not started|shut down"):
        await link.fire("state::set", {"scope": SCOPE, "key": "closed", "value": 1})
