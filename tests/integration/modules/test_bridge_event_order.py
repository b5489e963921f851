"""Socket clients of a front whose stream store is a Bridge end on the value the back holds, even when change events
arrive in another order than the writes were applied (two fronts writing one item: each publishes its event after
the back answered its write). Before, a client's last event said ``b10-5`` while the back held ``a10-4``, with
nothing to tell it: 19 of 134 rounds of six concurrent sets from two fronts. The front now reads an item back after
two of its events came close together, and tells its clients the stored value when the last event said otherwise.

Here the late event is published on the back's ``stream.events`` by hand, as the other front's would have arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from iii import III
from iii_streams.events import make_event
from tests.integration.modules.test_bridge_topology import (
    Topology,
    call,
    joined,
    our_client,
    topology,  # noqa: F401  (a fixture, used by its name)
    until_bridged,
)

pytestmark = pytest.mark.our_engine("starts two engine processes from config files")

ITEM = {"stream_name": "order", "group_id": "g", "item_id": "x"}


async def _events(ws: websockets.ClientConnection, seen: list[dict[str, Any]]) -> None:
    async for raw in ws:
        seen.append(json.loads(raw)["event"])


async def _until_seen(seen: list[dict[str, Any]], wanted: list[dict[str, Any]], within: float = 10.0) -> None:
    """Until the events the client got are ``wanted`` (all of them, in order)."""
    deadline = asyncio.get_running_loop().time() + within
    while seen != wanted:
        assert asyncio.get_running_loop().time() < deadline and len(seen) <= len(wanted), seen
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _watched(topology: Topology) -> AsyncIterator[tuple[III, III, list[dict[str, Any]]]]:  # noqa: F811
    """A client of the front and one of the back, and the events a socket client of the front joined to ``order``
    gets, as they come."""
    front = await our_client(topology.front_url)
    back = await our_client(topology.back_url)
    try:
        await until_bridged(front)
        ws, _ = await joined(f"ws://127.0.0.1:{topology.front_streams}/", "order")
        seen: list[dict[str, Any]] = []
        reader = asyncio.create_task(_events(ws, seen))
        try:
            yield front, back, seen
        finally:
            reader.cancel()
            await ws.close()
    finally:
        await back.shutdown_async()
        await front.shutdown_async()


async def test_a_late_event_of_an_older_write_is_corrected_to_the_stored_value(topology: Topology) -> None:  # noqa: F811
    async with _watched(topology) as (front, back, seen):
        await call(front, "stream::set", {**ITEM, "data": "a1"})
        await call(front, "stream::set", {**ITEM, "data": "b2"})
        changes = [{"type": "create", "data": "a1"}, {"type": "update", "data": "b2"}]
        await _until_seen(seen, changes)
        # the event of a write applied before b2 (another front's), arriving after b2's
        await call(back, "publish", {"topic": "stream.events", "data": make_event("order", "g", "x", "update", "a1")})
        # then the stored value (before, the client was left with a1)
        await _until_seen(seen, [*changes, {"type": "update", "data": "a1"}, {"type": "update", "data": "b2"}])
        assert await call(front, "stream::get", ITEM) == "b2"


async def test_a_late_event_of_a_deleted_item_is_corrected_to_a_delete(topology: Topology) -> None:  # noqa: F811
    async with _watched(topology) as (front, back, seen):
        await call(front, "stream::set", {**ITEM, "item_id": "y", "data": 1})
        await call(front, "stream::delete", {**ITEM, "item_id": "y"})
        changes = [{"type": "create", "data": 1}, {"type": "delete", "data": 1}]
        await _until_seen(seen, changes)
        await call(back, "publish", {"topic": "stream.events", "data": make_event("order", "g", "y", "update", 1)})
        await _until_seen(seen, [*changes, {"type": "update", "data": 1}, {"type": "delete", "data": 1}])
