"""A stream socket client of a front engine whose stream store is a Bridge to a back engine: while the back is down
(or restarting) the front hears none of the back's ``stream.events``, and a restarted back may hold other data
altogether. The client must learn that (closed with 1013, "reconnect and join") instead of silently keeping a
view that stopped following the store.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.modules.test_bridge_topology import (
    BACK,
    FRONT,
    StartEngine,
    Topology,
    call,
    joined,
    our_client,
    topology,  # noqa: F401  (a fixture, used by its name)
    until_bridged,
)
from tests.services import logged_port

pytestmark = pytest.mark.our_engine("starts two engine processes from config files and restarts one")


async def test_a_socket_client_is_told_to_resync_after_the_back_restarts(topology: Topology) -> None:  # noqa: F811
    front = await our_client(topology.front_url)
    try:
        await until_bridged(front)
        item = {"stream_name": "gap", "group_id": "g", "item_id": "1"}
        ws, _ = await joined(f"ws://127.0.0.1:{topology.front_streams}/", "gap")
        async with ws:
            await call(front, "stream::set", {**item, "data": 1})
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == {"type": "create", "data": 1}

            await topology.kill_back()
            await topology.start_back()
            # the restarted back no longer has the item the client was synced with
            await until_bridged(front)
            assert await call(front, "stream::get", item) is None

            with pytest.raises(ConnectionClosed) as closed:
                extra = await asyncio.wait_for(ws.recv(), 10)
                pytest.fail(f"expected a 1013 close after the back restarted, got {extra!r}")
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, closed.value
    finally:
        await front.shutdown_async()


async def test_a_socket_client_is_told_to_resync_when_its_own_change_event_was_not_published(
        engine_process: StartEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a back without a pub/sub module: stream::set works there, publishing the change event does not
    back_config = tmp_path / "back-no-pubsub.yaml"
    lines = BACK.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "modules::pubsub::PubSubModule" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("  - class:"))
    back_config.write_text("".join(lines[:start] + lines[end:]))
    # port 0 everywhere and the ports bound read back, as the topology fixture does
    monkeypatch.setenv("BRIDGE_BACK_STREAMS_PORT", "0")
    monkeypatch.setenv("BRIDGE_FRONT_STREAMS_PORT", "0")
    monkeypatch.setenv("III_BIND_HOST", "127.0.0.1")
    monkeypatch.delenv("III_URL", raising=False)
    back = await engine_process("--config", str(back_config))
    monkeypatch.setenv("BRIDGE_BACK_PORT", str(back.port))  # the front's bridge_url
    front_engine = await engine_process("--config", str(FRONT))
    front_streams = logged_port(front_engine.log(), "stream socket")
    front = await our_client(front_engine.url)
    try:
        await until_bridged(front)
        ws, _ = await joined(f"ws://127.0.0.1:{front_streams}/", "np")
        async with ws:
            assert await call(front, "stream::set", {"stream_name": "np", "group_id": "g", "item_id": "1",
                                                     "data": 1}) == {"old_value": None, "new_value": 1}
            with pytest.raises(ConnectionClosed) as closed:
                extra = await asyncio.wait_for(ws.recv(), 10)
                pytest.fail(f"expected a 1013 close after an unpublished change, got {extra!r}")
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, closed.value
        assert "not published" in front_engine.log()
    finally:
        await front.shutdown_async()


async def test_a_stream_message_with_a_malformed_id_or_event_type_is_refused(topology: Topology) -> None:  # noqa: F811
    front, back = await our_client(topology.front_url), await our_client(topology.back_url)
    try:
        await until_bridged(front)
        ws, _ = await joined(f"ws://127.0.0.1:{topology.front_streams}/", "bad")
        async with ws:
            wrapper = {"type": "stream", "timestamp": 1, "streamName": "bad", "groupId": "g"}
            for bad in ({"id": {"a": 1}, "event": {"type": "create", "data": 1}}, {"id": "1", "event": {"data": 1}},
                        {"id": "1", "event": {"type": 5, "data": 1}}):
                await call(back, "publish", {"topic": "stream.events", "data": {**wrapper, **bad}})
            await call(back, "publish", {"topic": "stream.events", "data": {
                **wrapper, "id": "2", "event": {"type": "create", "data": 2}}})
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (first["id"], first["event"]) == ("2", {"type": "create", "data": 2}), first
    finally:
        await front.shutdown_async()
        await back.shutdown_async()
