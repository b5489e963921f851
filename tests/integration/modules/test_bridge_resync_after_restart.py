"""After the back engine restarts, a stream socket client of the front is closed with 1013 only once the front's
``stream.events`` subscription is back on the restarted back: the client that re-joins then gets every later change
event (a re-join before the subscription was back missed the events of that window)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.modules.test_bridge_topology import (
    Topology,
    call,
    joined,
    our_client,
    topology,  # noqa: F401  (a fixture, used by its name)
    until_bridged,
)

pytestmark = pytest.mark.our_engine("starts two engine processes from config files and restarts one")


async def test_a_client_that_rejoins_after_the_1013_gets_the_next_change(topology: Topology) -> None:  # noqa: F811
    front = await our_client(topology.front_url)
    url = f"ws://127.0.0.1:{topology.front_streams}/"
    item = {"stream_name": "resync", "group_id": "g", "item_id": "1"}
    try:
        await until_bridged(front)
        ws, _ = await joined(url, "resync")
        try:
            await topology.kill_back()
            await topology.start_back()
            await asyncio.wait_for(ws.wait_closed(), 20)  # (the restarted back sent nothing this client follows)
            assert ws.close_code == 1013, (ws.close_code, ws.close_reason)
        finally:
            await ws.close()
        ws, synced = await joined(url, "resync")  # at once, as a client told to re-sync does
        try:
            assert synced == []
            await call(front, "stream::set", {**item, "data": 2})
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))["event"]
            assert event == {"type": "create", "data": 2}, event
        finally:
            await ws.close()
    finally:
        await front.shutdown_async()
