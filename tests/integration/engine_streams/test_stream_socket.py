"""The client stream socket: join/sync, live updates, leave, join triggers, auth, one frame per socket, slow
clients, subprotocols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from iii_engine import Engine
from tests.polling import until

from .helpers import Recorder, SocketClient, Worker, engine_config, registered, stream_module, trigger_active


@pytest.fixture
async def worker(engine_url: str) -> AsyncIterator[Worker]:
    w = await Worker.connect(engine_url)
    yield w
    await w.close()


def item(item_id: str = "i", group: str = "g", **extra: Any) -> dict[str, Any]:
    return {"stream_name": "s", "group_id": group, "item_id": item_id, **extra}


async def test_join_group_sync_then_live_events_then_leave(engine: Engine, worker: Worker) -> None:
    await worker.result("stream::set", item(data={"v": 0}))
    client = await SocketClient.connect(engine)
    await client.join("sub-1", "s", "g")
    sync = await client.recv()
    assert sync["type"] == "stream" and sync["event"] == {"type": "sync", "data": [{"v": 0}]}
    assert (sync["streamName"], sync["groupId"], sync["id"]) == ("s", "g", None)
    assert "subscriptionId" not in sync

    await worker.result("stream::set", item(data={"v": 1}))
    await worker.result("stream::set", item(group="other", data={"v": 9}))  # not joined
    await worker.result("stream::update", item(ops=[{"type": "increment", "path": "v", "by": 1}]))
    await worker.result("stream::send", {"stream_name": "s", "group_id": "g", "type": "hello", "data": 1})
    await worker.result("stream::delete", item())
    frames = [await client.recv() for _ in range(4)]
    assert [f["event"] for f in frames] == [
        {"type": "update", "data": {"v": 1}}, {"type": "update", "data": {"v": 2}},
        {"type": "event", "event": {"type": "hello", "data": 1}}, {"type": "delete", "data": {"v": 2}}]

    await client.leave("sub-1", "s", "g")
    await client.join("probe", "s", "probe-group")  # answered after the leave was handled
    assert (await client.recv())["event"] == {"type": "sync", "data": []}
    await worker.result("stream::set", item(data={"v": 3}))
    await worker.result("stream::set", item(group="probe-group", data="p"))
    assert (await client.recv())["event"] == {"type": "create", "data": "p"}  # nothing from the left group
    await client.close()


async def test_item_subscription_sync_and_filter(engine: Engine, worker: Worker) -> None:
    client = await SocketClient.connect(engine)
    await client.join("a", "s", "g", "x")
    assert (await client.recv())["event"] == {"type": "sync", "data": None}
    await worker.result("stream::set", item("y", data=1))
    await worker.result("stream::send", {"stream_name": "s", "group_id": "g", "type": "no-id", "data": 1})
    await worker.result("stream::set", item("x", data=2))
    frame = await client.recv()
    assert (frame["id"], frame["event"]) == ("x", {"type": "create", "data": 2})
    await client.close()


async def test_one_frame_per_socket_for_overlapping_subscriptions(engine: Engine, worker: Worker) -> None:
    client = await SocketClient.connect(engine)
    await client.join("group", "s", "g")
    await client.recv()
    await client.join("item", "s", "g", "i")
    await client.recv()
    await worker.result("stream::set", item(data=1))
    await worker.result("stream::set", item("other", data=2))
    first, second = await client.recv(), await client.recv()
    assert (first["id"], second["id"]) == ("i", "other")  # "i" matched twice but was sent once (ST6)
    await client.close()


async def test_join_trigger_refuses_and_leave_triggers_fire_on_close(engine: Engine, worker: Worker) -> None:
    joins, leaves = Recorder(), Recorder()

    async def gate(payload: Any) -> Any:
        await joins(payload)
        return {"unauthorized": payload["group_id"] == "secret"}

    await worker.register("gate", gate)
    await worker.register("left", leaves)
    await worker.register("other_stream_only", Recorder({"unauthorized": True}))
    ids = [await worker.trigger("stream:join", "gate", {}),
           await worker.trigger("stream:leave", "left", {"stream_name": "s"}),
           await worker.trigger("stream:join", "other_stream_only", {"stream_name": "elsewhere"})]  # ST7 filter
    for tid in ids:
        await trigger_active(engine, tid)

    client = await SocketClient.connect(engine)
    await client.join("no", "s", "secret")
    refused = await client.recv()
    assert refused["event"] == {"type": "unauthorized"} and refused["groupId"] == "secret"
    await client.join("yes", "s", "open", "it")
    assert (await client.recv())["event"]["type"] == "sync"  # still open after a refusal
    assert [p["subscription_id"] for p in joins.payloads] == ["no", "yes"]
    assert joins.payloads[1] == {"subscription_id": "yes", "stream_name": "s", "group_id": "open", "id": "it",
                                 "context": None}
    await worker.result("stream::set", {"stream_name": "s", "group_id": "secret", "item_id": "i", "data": 1})
    await worker.result("stream::set", {"stream_name": "s", "group_id": "open", "item_id": "it", "data": 1})
    assert (await client.recv())["groupId"] == "open"
    await client.close()
    assert (await leaves.wait_for(1)) == [{"subscription_id": "yes", "stream_name": "s", "group_id": "open",
                                           "id": "it", "context": None}]


async def test_sync_goes_through_custom_list(engine: Engine, worker: Worker) -> None:
    await worker.register("stream::list(cust)", lambda req: _value(["from", "worker"]))
    await registered(engine, "stream::list(cust)")
    client = await SocketClient.connect(engine)
    await client.join("c", "cust", "g")
    assert (await client.recv())["event"] == {"type": "sync", "data": ["from", "worker"]}
    await client.close()


async def _value(value: Any) -> Any:
    return value


async def test_only_root_path_is_served(engine: Engine) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(stream_module(engine).url + "stream/s/g/")
    assert info.value.response.status_code == 404
    client = await SocketClient.connect(engine, "/?token=abc")
    await client.close()


async def test_first_offered_subprotocol_is_echoed(engine: Engine) -> None:
    offered = [Subprotocol("Authorization"), Subprotocol("tok")]
    async with websockets.connect(stream_module(engine).url, subprotocols=offered) as ws:
        assert ws.subprotocol == "Authorization"


@pytest.mark.our_engine("configures the stream socket's auth function")
async def test_auth_context_reaches_join_payload() -> None:
    async with Engine(config=engine_config(auth_function="auth")) as engine:
        worker = await Worker.connect(engine.url)
        seen, joins = Recorder(), Recorder()

        async def auth(data: Any) -> Any:
            await seen(data)
            return {"context": {"user": data["query_params"]["user"][0], "h": data["headers"].get("x-token")}}

        await worker.register("auth", auth)
        await worker.register("joined", joins)
        await trigger_active(engine, await worker.trigger("stream:join", "joined", {}))
        await registered(engine, "auth")
        client = await SocketClient.connect(engine, "/?user=ada&user=bob", additional_headers={"X-Token": "t1"})
        await client.join("j", "s", "g")
        await client.recv()
        auth_input = seen.payloads[0]
        assert auth_input["path"] == "/" and auth_input["query_params"] == {"user": ["ada", "bob"]}
        assert auth_input["addr"].startswith("127.0.0.1:")
        assert joins.payloads[0]["context"] == {"user": "ada", "h": "t1"}
        await client.close()
        await worker.close()


@pytest.mark.our_engine("configures auth_reject (ours)")
async def test_auth_cannot_reject_by_default_but_can_with_auth_reject() -> None:
    async def refuse(data: Any) -> Any:
        return {"unauthorized": True}

    async with Engine(config=engine_config(auth_function="auth")) as engine:
        worker = await Worker.connect(engine.url)
        await worker.register("auth", refuse)
        await registered(engine, "auth")
        client = await SocketClient.connect(engine)  # production behaviour: upgrade proceeds
        await client.close()
        await worker.close()
    async with Engine(config=engine_config(auth_function="auth", auth_reject=True)) as engine:
        worker = await Worker.connect(engine.url)
        await worker.register("auth", refuse)
        await registered(engine, "auth")
        with pytest.raises(InvalidStatus) as info:
            await SocketClient.connect(engine)
        assert info.value.response.status_code == 401
        await worker.close()


@pytest.mark.our_engine("configures the stream socket's send limits")
async def test_slow_client_is_closed_with_1013() -> None:
    async with Engine(config=engine_config(client_queue_size=4)) as engine:
        worker = await Worker.connect(engine.url)
        client = await SocketClient.connect(engine, max_queue=1, max_size=None)
        await client.join("slow", "s", "g")
        await client.recv()
        blob = "x" * 256 * 1024
        for n in range(80):  # ~20 MiB: far more than socket buffers plus 4 queued frames
            await worker.result("stream::set", item(str(n), data=blob))
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await client.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        await worker.close()


@pytest.mark.our_engine("configures the stream socket's send limits")
async def test_a_slow_client_that_never_reads_again_is_dropped_not_held() -> None:
    """A client that stops reading altogether never takes the 1013 close frame (it waits behind the bytes it did not
    read): before, the engine's close waited on it for as long as the peer kept the connection open, holding the
    client and its queue. Now the close has a deadline (``slow_close_timeout_ms``), after which the connection is
    reset."""
    async with Engine(config=engine_config(client_queue_size=4, slow_close_timeout_ms=200)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        # max_queue=1: the client library stops reading its socket once one message waits unread
        client = await SocketClient.connect(engine, max_queue=1, max_size=None)
        await client.join("slow", "s", "g")
        await until(lambda: len(socket._clients) == 1)
        blob = "x" * 256 * 1024
        for n in range(80):  # ~20 MiB: far more than socket buffers plus 4 queued frames
            await worker.result("stream::set", item(str(n), data=blob))
        await until(lambda: not socket._clients, within=8.0)  # the close's deadline is 0.2 s
        await worker.close()
        await client.ws.close()
