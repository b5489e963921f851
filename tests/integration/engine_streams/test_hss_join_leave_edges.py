"""The stream socket's join/leave contract at its edges: a client that goes during a hung join, and joins whose
``stream:join`` handlers never answered.

The contract: every join the ``stream:join`` handlers heard of and did not refuse gets one ``stream:leave``: when
the client leaves it or goes, when a later join replaces it under its id, or at once when the handlers did not
answer within ``join_timeout_ms`` or the client went before they did (a handler may have acted on it). A refused
join (``unauthorized``) gets none, as in production; a join repeating the live subscription under its id is that
subscription, whose leave comes when it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import Recorder, SocketClient, Worker, engine_config, registered, stream_module, trigger_active

pytestmark = pytest.mark.our_engine("bounds the stream socket's joins with its own settings")

LONG_JOIN_TIMEOUT_MS = 10_000  # what the old code held a gone client for; the tests wait far less


def _payload(sub_id: str, stream: str, group: str, item: str | None = None) -> dict[str, Any]:
    return {"subscription_id": sub_id, "stream_name": stream, "group_id": group, "id": item, "context": None}


async def _hooked(engine: Engine, join: Any, leave: Recorder) -> Worker:
    worker = await Worker.connect(engine.url)
    await worker.register("gate", join)
    await worker.register("left", leave)
    await trigger_active(engine, await worker.trigger("stream:join", "gate", {}))
    await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
    return worker


async def test_a_client_gone_during_a_hung_join_handler_is_let_go_at_once() -> None:
    """Before, the socket read its next message (and so saw the close) only once the join ended: the gone client
    kept its slot of ``max_clients``, its queue, its task, the store's event feed and the pending call for the whole
    ``join_timeout_ms``; and the join its handlers had heard of never got a leave."""
    async with Engine(config=engine_config(join_timeout_ms=LONG_JOIN_TIMEOUT_MS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        release = asyncio.Event()
        answered = asyncio.Event()

        async def gate(_: Any) -> Any:
            await release.wait()
            answered.set()
            return None  # a late "yes"

        leaves = Recorder()
        worker = await _hooked(engine, gate, leaves)
        client = await SocketClient.connect(engine)
        await client.join("h", "s", "g")
        await until(lambda: len(worker.calls.get("gate", [])) == 1)
        assert socket._clients
        await client.close()
        await until(lambda: not socket._clients and not socket.following, within=3)
        assert not [p for p in engine.invocations.pending.values() if p.function_id == "gate"]
        assert await leaves.wait_for(1, wait=3) == [_payload("h", "s", "g")]
        release.set()  # the late answer is dropped: no subscription, no second leave
        await answered.wait()
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        assert not socket._clients and not socket.following and len(leaves.payloads) == 1
        await worker.close()


async def test_a_client_gone_during_a_hung_sync_read_is_let_go_at_once_and_gets_its_leave() -> None:
    """Before, the client was let go only at ``join_timeout_ms`` (the sync read of a worker-served stream hung)."""
    async with Engine(config=engine_config(join_timeout_ms=LONG_JOIN_TIMEOUT_MS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        hung = asyncio.Event()
        await worker.register("stream::get(hang)", lambda _: hung.wait())
        await registered(engine, "stream::get(hang)")
        leaves = Recorder()
        await worker.register("left", leaves)
        await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
        client = await SocketClient.connect(engine)
        await client.join("h", "hang", "g", "item")
        await until(lambda: len(worker.calls.get("stream::get(hang)", [])) == 1)
        await client.close()
        await until(lambda: not socket._clients and not socket.following, within=3)
        assert await leaves.wait_for(1, wait=3) == [_payload("h", "hang", "g", "item")]
        await worker.close()


async def test_a_join_whose_handlers_timed_out_gets_its_leave_at_once() -> None:
    """Before, a join refused for ``join_timeout`` never got a leave, though its handler may have acted on it (a
    presence entry added by a handler that answered late stayed for good)."""
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        leaves = Recorder()
        worker = await _hooked(engine, lambda _: asyncio.Event().wait(), leaves)
        client = await SocketClient.connect(engine)
        await client.join("t", "s", "g", "i")
        frame = await client.recv()
        assert frame["event"]["type"] == "error" and frame["event"]["code"] == "join_timeout", frame
        assert await leaves.wait_for(1) == [_payload("t", "s", "g", "i")]
        assert not any(c.subscriptions for c in socket._clients)  # still refused: nobody said yes
        await client.close()
        await until(lambda: not socket._clients)
        # no second leave at the disconnect: the join was not live
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        assert len(leaves.payloads) == 1
        await worker.close()


async def test_a_timed_out_repeat_of_a_live_subscription_leaves_it_live_and_its_leave_comes_once() -> None:
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        hang = False

        async def gate(_: Any) -> Any:
            if hang:
                await asyncio.Event().wait()

        leaves = Recorder()
        worker = await _hooked(engine, gate, leaves)
        client = await SocketClient.connect(engine)
        await client.join("a", "s", "room")
        assert (await client.recv())["event"]["type"] == "sync"
        hang = True
        await client.join("a", "s", "room")  # the same subscription again: it stays live
        assert (await client.recv())["event"]["code"] == "join_timeout"
        await client.join("a", "s", "other-room")  # another one under the id: it never came to be
        assert (await client.recv())["event"]["code"] == "join_timeout"
        assert [p["group_id"] for p in await leaves.wait_for(1)] == ["other-room"]
        await worker.result("stream::set", {"stream_name": "s", "group_id": "room", "item_id": "i", "data": 1})
        assert (await client.recv())["event"]["type"] == "create"  # "room" is still joined
        await client.close()
        assert [p["group_id"] for p in await leaves.wait_for(2)] == ["other-room", "room"]
        await worker.result("stream::set", {"stream_name": "s", "group_id": "room", "item_id": "j", "data": 1})
        assert len(leaves.payloads) == 2
        await worker.close()


async def test_a_refused_join_gets_no_leave() -> None:
    """As in production: the handlers' own refusal ends the join; a leave would name a subscription never had."""
    async with Engine(config=engine_config()) as engine:
        leaves = Recorder()
        worker = await _hooked(engine, Recorder({"unauthorized": True}), leaves)
        client = await SocketClient.connect(engine)
        await client.join("r", "s", "g")
        assert (await client.recv())["event"] == {"type": "unauthorized"}
        await client.close()
        await until(lambda: not stream_module(engine).socket._clients)  # type: ignore[union-attr]
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        assert leaves.payloads == []
        await worker.close()
