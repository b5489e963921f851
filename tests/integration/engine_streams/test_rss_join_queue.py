"""Joins queued on one stream socket behind one that hangs: each is answered, in the order sent, and every join the
``stream:join`` handlers heard of gets exactly one ``stream:leave`` (docs/protocol.md ST12)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import Recorder, SocketClient, Worker, engine_config, stream_module, trigger_active

pytestmark = pytest.mark.our_engine("bounds the stream socket's joins with its own settings")


async def _hooked(engine: Engine, leaves: Recorder) -> Worker:
    """A worker whose join handler hangs for groups named ``slow*`` (past join_timeout_ms) and lets others in."""
    worker = await Worker.connect(engine.url)

    async def gate(data: Any) -> Any:
        if data["group_id"].startswith("slow"):
            await asyncio.Event().wait()

    await worker.register("gate", gate)
    await worker.register("left", leaves)
    await trigger_active(engine, await worker.trigger("stream:join", "gate", {}))
    await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
    return worker


async def test_joins_queued_behind_a_hung_one_are_each_answered_in_order() -> None:
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        leaves = Recorder()
        worker = await _hooked(engine, leaves)
        client = await SocketClient.connect(engine)
        await client.join("s0", "s", "slow")
        for n in range(1, 30):
            await client.join(f"s{n}", "s", f"g{n}")
        first = await client.recv()
        assert (first["groupId"], first["event"]["code"]) == ("slow", "join_timeout"), first
        answers = [await client.recv() for _ in range(29)]
        assert [(a["groupId"], a["event"]["type"]) for a in answers] == [(f"g{n}", "sync") for n in range(1, 30)]
        assert [p["group_id"] for p in await leaves.wait_for(1)] == ["slow"]
        await client.close()
        await leaves.wait_for(30)
        assert sorted(p["subscription_id"] for p in leaves.payloads) == sorted(f"s{n}" for n in range(30))
        await worker.close()


async def test_one_subscription_id_rejoined_left_and_gone_while_joins_hang_gets_one_leave_per_join() -> None:
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        leaves = Recorder()
        worker = await _hooked(engine, leaves)
        client = await SocketClient.connect(engine)
        await client.join("a", "s", "slow-1")  # hangs, times out: its leave comes at once
        await client.join("a", "s", "room")  # read only once the first is over; let in
        await client.leave("a", "s", "room")  # sent while the joins before it are in flight: applied after them
        await client.leave("a", "s", "room")  # a leave of nothing now: no second leave
        await client.join("a", "s", "slow-2")  # hangs; the client goes before its handler answers
        assert (await client.recv())["event"]["code"] == "join_timeout"
        assert (await client.recv())["event"]["type"] == "sync"
        await until(lambda: len(worker.calls.get("gate", [])) == 3)
        await client.close()
        await until(lambda: not socket._clients and not socket.following)
        assert [p["group_id"] for p in await leaves.wait_for(3)] == ["slow-1", "room", "slow-2"]
        await worker.result("stream::set", {"stream_name": "s", "group_id": "room", "item_id": "i", "data": 1})
        assert len(leaves.payloads) == 3 and socket.ignored_messages == 1
        await worker.close()
