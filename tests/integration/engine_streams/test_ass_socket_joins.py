"""Attacks on the stream socket's join: a custom stream whose sync read hangs or fails, and join handlers that hang.

A join runs the ``stream:join`` handlers, then the custom-aware sync read (``stream::list(NAME)`` /
``stream::get(NAME)`` of a worker). Both are bounded by ``join_timeout_ms``; a join that fails or runs out of time
tells the client with an ``error`` event, and a client that disconnects meanwhile is let go at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from iii_engine import Engine
from tests.polling import until

from .helpers import (
    Recorder,
    SocketClient,
    Worker,
    WorkerError,
    engine_config,
    registered,
    stream_module,
    trigger_active,
)

pytestmark = pytest.mark.our_engine("bounds the stream socket's joins with its own settings")

MAX_JOIN_NAME = 1024  # iii_engine.modules.stream.socket.MAX_JOIN_NAME (a literal: the test also runs on older code)


async def _forever(_: Any) -> Any:
    await asyncio.Event().wait()


async def test_a_hanging_custom_sync_read_is_bounded_and_reported() -> None:
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        worker = await Worker.connect(engine.url)
        await worker.register("stream::list(hang)", _forever)
        await registered(engine, "stream::list(hang)")
        client = await SocketClient.connect(engine)
        await client.join("h", "hang", "g")
        frame = await client.recv()
        assert frame["event"]["type"] == "error", frame
        assert frame["event"]["code"] == "join_timeout"
        assert "300 ms" in frame["event"]["message"] and "stream::list(hang)" in frame["event"]["message"]
        # the socket still serves its other joins
        await client.join("ok", "plain", "g")
        assert (await client.recv())["event"] == {"type": "sync", "data": []}
        await client.close()
        await worker.close()


async def test_a_client_gone_during_a_hanging_sync_read_is_let_go() -> None:
    """Before, the handler waited on the sync read for as long as the serving worker lived: the closed client kept
    its slot of ``max_clients`` and the store's event feed stayed open. Now only until ``join_timeout_ms``."""
    async with Engine(config=engine_config(join_timeout_ms=500)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        await worker.register("stream::get(hang)", _forever)
        await registered(engine, "stream::get(hang)")
        client = await SocketClient.connect(engine)
        await client.join("h", "hang", "g", "item")
        await until(lambda: len(worker.calls.get("stream::get(hang)", [])) == 1)
        await client.close()
        await until(lambda: not socket._clients and not socket.following)
        await worker.close()


async def test_a_failing_custom_sync_read_is_reported_to_the_client() -> None:
    """Before, a failed sync read was only logged: the client stayed subscribed, waiting for a sync that never
    came."""
    async with Engine(config=engine_config()) as engine:
        worker = await Worker.connect(engine.url)

        async def broken(_: Any) -> Any:
            raise WorkerError("disk_on_fire", "the backend is down")

        await worker.register("stream::list(broken)", broken)
        await registered(engine, "stream::list(broken)")
        client = await SocketClient.connect(engine)
        await client.join("b", "broken", "g")
        frame = await client.recv()
        assert (frame["streamName"], frame["groupId"], frame["id"]) == ("broken", "g", None)
        assert frame["event"]["type"] == "error" and frame["event"]["code"] == "sync_failed", frame
        assert "disk_on_fire" in frame["event"]["message"] and "the backend is down" in frame["event"]["message"]
        await client.close()
        await worker.close()


async def test_a_hanging_join_handler_is_bounded_and_refuses_the_join() -> None:
    async with Engine(config=engine_config(join_timeout_ms=300)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        await worker.register("slow_gate", _forever)
        await trigger_active(engine, await worker.trigger("stream:join", "slow_gate", {"stream_name": "gated"}))
        client = await SocketClient.connect(engine)
        await client.join("g", "gated", "g")
        frame = await client.recv()
        assert frame["event"]["type"] == "error" and frame["event"]["code"] == "join_timeout", frame
        assert not any(c.subscriptions for c in socket._clients)  # not joined: its handlers never said yes
        await worker.result("stream::set", {"stream_name": "gated", "group_id": "g", "item_id": "i", "data": 1})
        await client.nothing_for(0.3)
        await client.close()
        await worker.close()


@pytest.mark.parametrize("field", ["subscriptionId", "streamName", "groupId", "id"])
async def test_a_join_with_an_overlong_name_is_refused_and_not_held(field: str) -> None:
    """Before, every name was kept as sent, up to a whole frame (1 MiB): 1000 such joins held about 1 GiB for one
    socket (measured: 200 joins with 1000 KiB subscription ids, 198 MiB more in the engine)."""
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        client = await SocketClient.connect(engine)
        data = {"subscriptionId": "sub", "streamName": "s", "groupId": "g", "id": "i"}
        data[field] = "x" * (MAX_JOIN_NAME + 1)
        await client.ws.send(json.dumps({"type": "join", "data": data}))
        frame = await client.recv()
        assert frame["event"]["type"] == "error" and frame["event"]["code"] == "name_too_long", frame
        assert f"at most {MAX_JOIN_NAME} characters" in frame["event"]["message"]
        assert all(len(frame[key] or "") <= MAX_JOIN_NAME for key in ("streamName", "groupId", "id"))
        assert not any(c.subscriptions for c in socket._clients)
        data[field] = "y" * MAX_JOIN_NAME  # the longest accepted
        await client.ws.send(json.dumps({"type": "join", "data": data}))
        assert (await client.recv())["event"] == {"type": "sync", "data": None}
        await client.close()


async def test_leave_handlers_fire_only_for_a_subscription_the_client_has(engine: Engine) -> None:
    """Before, every leave frame fired the ``stream:leave`` handlers with whatever names it carried: one client could
    call them once per frame (each call holding a slot of ``max_fired_calls``) for groups it never joined."""
    worker = await Worker.connect(engine.url)
    leaves = Recorder()
    await worker.register("left", leaves)
    await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
    client = await SocketClient.connect(engine)
    for n in range(50):
        await client.leave(f"ghost-{n}", "s", f"never-joined-{n}")
    await client.join("real", "s", "g")
    assert (await client.recv())["event"]["type"] == "sync"
    await client.leave("real", "s", "other-group")  # the names of the subscription left, not of the frame
    assert await leaves.wait_for(1) == [{"subscription_id": "real", "stream_name": "s", "group_id": "g", "id": None,
                                         "context": None}]
    await client.join("probe", "s", "probe")  # handled after every leave above
    assert (await client.recv())["event"]["type"] == "sync"
    assert len(leaves.payloads) == 1
    await client.close()
    await worker.close()


async def test_a_join_that_replaces_a_subscription_fires_the_leave_of_the_replaced_one(engine: Engine) -> None:
    """Before, re-using a subscription id for another group dropped the first group silently: its leave handlers
    never heard of it (presence kept the client in that group), and at disconnect they got the second only."""
    worker = await Worker.connect(engine.url)
    leaves = Recorder()
    await worker.register("left", leaves)
    await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
    client = await SocketClient.connect(engine)
    await client.join("a", "s", "room-1")
    assert (await client.recv())["event"]["type"] == "sync"
    await client.join("a", "s", "room-1")  # the same subscription again: nothing left
    assert (await client.recv())["event"]["type"] == "sync"
    await client.join("a", "s", "room-2")
    assert (await client.recv())["event"]["type"] == "sync"
    assert [p["group_id"] for p in await leaves.wait_for(1)] == ["room-1"]
    await client.close()
    assert [p["group_id"] for p in await leaves.wait_for(2)] == ["room-1", "room-2"]
    await worker.close()


async def test_upgrades_waiting_for_the_auth_function_count_against_max_clients() -> None:
    """Before, only connected clients counted: a burst of connections made as many concurrent auth calls as it had
    connections (each held until the 10 s handshake timeout when the auth function was slow)."""
    async with Engine(config=engine_config(auth_function="auth", max_clients=2)) as engine:
        worker = await Worker.connect(engine.url)
        calls = 0
        gate = asyncio.Event()

        async def auth(_: Any) -> Any:
            nonlocal calls
            calls += 1
            await gate.wait()
            return {"context": None}

        await worker.register("auth", auth)
        await registered(engine, "auth")
        waiting = [asyncio.ensure_future(SocketClient.connect(engine)) for _ in range(2)]
        await until(lambda: calls == 2)
        with pytest.raises(InvalidStatus) as refused:
            await asyncio.wait_for(SocketClient.connect(engine), 5)
        assert refused.value.response.status_code == 503
        assert b"max_clients 2" in refused.value.response.body
        assert calls == 2  # no auth call for the refused one
        gate.set()
        for client in await asyncio.gather(*waiting):  # the two waiting ones get in
            await client.join("j", "s", "g")
            assert (await client.recv())["event"]["type"] == "sync"
            await client.close()
        await worker.close()
