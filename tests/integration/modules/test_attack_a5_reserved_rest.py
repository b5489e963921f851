"""Attack A5 on the REST API's reserved per-request channels (7a6af28, 22fdf76): handlers that stream fast, late,
twice or never, channels that expire or are refused while reserved, and the relay's bounds on them, against a real
engine, real HTTP clients and raw channel sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.config import ChannelSettings
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.modules.test_http_api import answer, worker_with_route

pytestmark = pytest.mark.our_engine("configures the REST API module and the relay's limits")

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def start(stack: AsyncExitStack, channels: dict[str, Any] | None = None,
                **settings: Any) -> tuple[Engine, RestApiModule, httpx.AsyncClient]:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, **settings})
    config = EngineConfig(host="127.0.0.1", port=0, modules=[spec], channels=ChannelSettings(**(channels or {})))
    engine = await stack.enter_async_context(Engine(config=config))
    module = engine.module("http_api")
    assert isinstance(module, RestApiModule), engine.unavailable_modules
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
    return engine, module, client


def called(engine: Engine, method: str) -> asyncio.Event:
    """An event set once the engine's relay ``method`` has been called (wraps it on this relay only)."""
    event = asyncio.Event()
    original: Callable[..., Any] = getattr(engine.channels, method)

    def wrapped(*args: Any) -> Any:
        try:
            return original(*args)
        finally:
            event.set()

    setattr(engine.channels, method, wrapped)
    return event


async def test_a_fast_stream_written_and_closed_before_a_null_result_arrives_whole(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "fast", "fast")
    call = asyncio.ensure_future(client.get("/fast"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), **OPTS) as ws:
        await ws.send(json.dumps({"type": "set_status", "status_code": 201}))
        for i in range(20):
            await ws.send(b"%03d," % i)
    await answer(worker, request)
    response = await call
    assert response.status_code == 201
    assert response.content == b"".join(b"%03d," % i for i in range(20))
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_a_null_result_then_a_late_stream_arrives_whole(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "late", "late")
    opened = called(engine, "open_local")
    call = asyncio.ensure_future(client.get("/late"))
    request = await worker.expect("invokefunction")
    await answer(worker, request)
    # the null result came first: the module opens its end itself, before the handler attaches
    await asyncio.wait_for(opened.wait(), 5)
    assert request["data"]["response"]["channel_id"] in engine.channels._channels
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), **OPTS) as ws:
        for i in range(20):
            await ws.send(b"%03d," % i)
    response = await call
    assert response.status_code == 200
    assert response.content == b"".join(b"%03d," % i for i in range(20))
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_two_writers_at_once_on_a_reserved_response_channel_second_gets_4009(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "two", "two")
    call = asyncio.ensure_future(client.get("/two"))
    request = await worker.expect("invokefunction")
    url = channel_url(engine.url, request["data"]["response"])
    first, second = await asyncio.gather(websockets.connect(url, **OPTS), websockets.connect(url, **OPTS))
    await asyncio.wait_for(second.wait_closed(), 5)  # the later of the two is refused, the first kept
    assert second.close_code == 4009 and first.close_code is None
    await first.send(b"one")
    await first.close()
    await answer(worker, request)  # the body ends once the function returned too
    response = await call
    assert response.content == b"one"
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_a_wrong_key_on_a_reserved_channel_is_refused(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "key", "key")
    call = asyncio.ensure_future(client.get("/key"))
    request = await worker.expect("invokefunction")
    wrong = dict(request["data"]["response"], access_key=request["data"]["request_body"]["access_key"])
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(channel_url(engine.url, wrong), **OPTS)
    assert refused.value.response.status_code == 404
    assert request["data"]["response"]["channel_id"] in engine.channels  # still reserved, untouched
    await answer(worker, request, {"status_code": 200, "body": "ok"})
    assert (await call).json() == "ok"
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_reserved_channels_count_against_max_open_503_with_retry_after(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack, {"max_open": 3})
    worker = await worker_with_route(engine, "held", "held")
    first = asyncio.ensure_future(client.get("/held"))
    request = await worker.expect("invokefunction")
    assert len(engine.channels) == 2 and not engine.channels._channels
    second = await client.get("/held")
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"
    assert len(engine.channels) == 2
    await answer(worker, request, {"status_code": 200, "body": 1})
    assert (await first).status_code == 200
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_a_response_channel_expired_while_reserved_then_null_result(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack, {"attach_timeout_ms": 50}, default_timeout=5000)
    worker = await worker_with_route(engine, "exp", "exp")
    call = asyncio.ensure_future(client.get("/exp"))
    request = await worker.expect("invokefunction")
    await asyncio.wait_for(engine.channels.wait_idle(), 5)  # both expired, reserved
    with pytest.raises(InvalidStatus):
        await websockets.connect(channel_url(engine.url, request["data"]["response"]), **OPTS)
    await answer(worker, request)
    response = await asyncio.wait_for(call, 5)
    assert response.status_code == 500


async def test_two_readers_at_once_on_a_reserved_request_body_one_gets_it_the_other_4009(
        stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "up", "up", "POST")
    call = asyncio.ensure_future(client.post("/up", content=b"b" * 200_000))
    request = await worker.expect("invokefunction")
    url = channel_url(engine.url, request["data"]["request_body"])
    first, second = await asyncio.gather(websockets.connect(url, **OPTS), websockets.connect(url, **OPTS))
    bodies = []
    for ws in (first, second):
        got = b""
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await ws.recv()
                got += message if isinstance(message, bytes) else message.encode()
        bodies.append((got, ws.close_code))
    assert sorted(bodies) == [(b"", 4009), (b"b" * 200_000, 1000)]
    await answer(worker, request, {"status_code": 200, "body": "ok"})
    assert (await call).json() == "ok"
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_stats_on_a_watched_response_channel_opens_the_module_s_end_and_the_stream_still_arrives(
        stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "st", "st")
    watched = called(engine, "when_live")
    call = asyncio.ensure_future(client.get("/st"))
    request = await worker.expect("invokefunction")
    ref = request["data"]["response"]
    await asyncio.wait_for(watched.wait(), 5)
    assert engine.channels._reserved[ref["channel_id"]].on_live is not None  # the module watches it
    assert engine.channels.stats(ref["channel_id"])["queued"] == 0  # made live: the module's reader attaches
    async with websockets.connect(channel_url(engine.url, ref), **OPTS) as ws:
        await ws.send(b"abc")
    await answer(worker, request)  # the body ends once the function returned too
    response = await call
    assert response.content == b"abc"
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_engine_stop_answers_a_request_whose_channels_are_still_reserved(stack: AsyncExitStack) -> None:
    engine, module, client = await start(stack, default_timeout=20_000)
    worker = await worker_with_route(engine, "stop", "stop")
    call = asyncio.ensure_future(client.get("/stop"))
    await worker.expect("invokefunction")
    assert len(engine.channels) == 2 and not engine.channels._channels
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(engine.stop(), 10)
    response = await asyncio.wait_for(call, 5)
    assert response.status_code == 503 and loop.time() - began < 5
    assert len(engine.channels) == 0 and not engine.channels._pending and not module._background


async def test_a_worker_gone_while_its_channels_are_reserved_answers_without_waiting_the_deadline(
        stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack, default_timeout=20_000)
    worker = await worker_with_route(engine, "gone", "gone")
    call = asyncio.ensure_future(client.get("/gone"))
    await worker.expect("invokefunction")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await worker.close()
    response = await asyncio.wait_for(call, 10)
    assert response.status_code >= 500 and loop.time() - began < 5
    await asyncio.wait_for(engine.channels.wait_idle(), 5)
