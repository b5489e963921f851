"""REST API bounds: engine stop answers waiting requests at once, a client gone while it waited for a slot is not
invoked, and a handler's response head (control frames before the first body chunk) is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http import api as api_module
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("configures the REST API module and stops our engine")

Start = Callable[..., Awaitable[tuple[Engine, RestApiModule, httpx.AsyncClient]]]


@pytest.fixture
async def api() -> AsyncIterator[Start]:
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> tuple[Engine, RestApiModule, httpx.AsyncClient]:
            spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, **settings})
            engine = await stack.enter_async_context(Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                                                                modules=[spec])))
            module = engine.module("http_api")
            assert isinstance(module, RestApiModule), engine.unavailable_modules
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
            return engine, module, client

        yield start


async def _route(engine: Engine, function_id: str, path: str) -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    await worker.register(function_id)
    await worker.send({"type": "registertrigger", "id": f"t-{function_id}", "trigger_type": "http",
                       "function_id": function_id, "config": {"api_path": path, "http_method": "GET"}})
    await worker.sync()
    return worker


async def test_stop_answers_requests_waiting_for_their_handler_at_once(api: Start) -> None:
    engine, _module, client = await api(default_timeout=20_000)
    worker = await _route(engine, "never", "never")
    waiting = [asyncio.ensure_future(client.get("/never")) for _ in range(3)]
    for _ in range(3):
        await worker.expect("invokefunction")  # the handler never answers
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(engine.stop(), 10)  # before: it waited out default_timeout (20 s)
    assert loop.time() - started < 5
    for response in await asyncio.gather(*waiting):
        assert response.status_code == 503 and "stopping" in response.json()["error"]
    assert not engine.invocations.pending


async def test_stop_answers_a_null_result_waiting_for_its_first_chunk(api: Start) -> None:
    engine, _module, client = await api(default_timeout=20_000)
    worker = await _route(engine, "null", "null")
    waiting = asyncio.ensure_future(client.get("/null"))
    request = await worker.expect("invokefunction")
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": "null"})  # null result, the response channel stays open
    await worker.sync()
    await asyncio.wait_for(engine.stop(), 10)
    assert (await waiting).status_code == 503


async def _wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition the server offers no event for (a closed transport), bounded."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_client_gone_while_waiting_for_a_slot_is_not_invoked(api: Start,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    engine, module, client = await api(concurrency_request_limit=1)
    worker = await _route(engine, "hold", "hold")
    first = asyncio.ensure_future(client.get("/hold"))
    held = await worker.expect("invokefunction")

    entered: asyncio.Queue[Any] = asyncio.Queue()
    take_slot = module._take_slot
    transports: list[Any] = []

    async def watched_take_slot() -> None:
        await entered.put(None)
        await take_slot()

    monkeypatch.setattr(module, "_take_slot", watched_take_slot)
    original_receive = module._receive

    async def receive(request: Any, claim: Any) -> bytearray:
        transports.append(request)
        return await original_receive(request, claim)

    monkeypatch.setattr(module, "_receive", receive)
    _reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(entered.get(), 5)  # the second request waits for the only slot
    writer.close()  # ... and its client leaves
    await writer.wait_closed()
    await _wait_until(lambda: transports[0].transport is None or transports[0].transport.is_closing(),
                      "the server to see the client leave")
    await worker.send({"type": "invocationresult", "invocation_id": held["invocation_id"], "function_id": "hold",
                       "result": {"body": "ok"}})
    assert (await first).status_code == 200
    await worker.nothing_for(0.3)  # proves an absence: the departed client's request never reaches the handler
    assert module.abandoned == 1 and module.in_flight == 0
    after = asyncio.ensure_future(client.get("/hold"))  # its slot was given back
    again = await worker.expect("invokefunction")
    await worker.send({"type": "invocationresult", "invocation_id": again["invocation_id"], "function_id": "hold",
                       "result": {"body": "again"}})
    assert (await after).json() == "again"


@pytest.mark.parametrize("kind", ["frames", "bytes"])
async def test_response_head_is_bounded(api: Start, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "MAX_CONTROL_FRAMES", 20)
    monkeypatch.setattr(api_module, "MAX_HEADER_BYTES", 4096)
    engine, _module, client = await api(default_timeout=20_000)
    worker = await _route(engine, "heads", "heads")
    waiting = asyncio.ensure_future(client.get("/heads"))
    request = await worker.expect("invokefunction")
    url = channel_url(engine.url, request["data"]["response"])
    closed: ConnectionClosed | None = None
    async with websockets.connect(url, compression=None) as out:
        try:
            for i in range(10_000):  # without a bound, only default_timeout would stop this
                if kind == "frames":
                    frame = {"type": "set_headers", "headers": {"x-same": str(i)}}
                else:
                    frame = {"type": "set_headers", "headers": {f"x-h{i}": "v" * 1000}}
                await out.send(json.dumps(frame))
            await out.send(b"body")
            await out.wait_closed()
        except ConnectionClosed as exc:
            closed = exc
        code, reason = out.close_code, out.close_reason
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 502
    assert ("control frames" if kind == "frames" else "header") in response.json()["error"]
    # The relay tells the writer its reader left (4002); the engine's reason stays in its log and the 502 body.
    assert code == 4002 or (closed is not None and closed.rcvd is not None and closed.rcvd.code == 4002), (code, reason)
    assert not engine.invocations.pending or request["invocation_id"] in engine.invocations.pending


async def test_response_head_within_the_bounds_is_served(api: Start) -> None:
    engine, _module, client = await api()
    worker = await _route(engine, "ok", "ok")
    waiting = asyncio.ensure_future(client.get("/ok"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        for i in range(50):
            await out.send(json.dumps({"type": "set_headers", "headers": {f"x-h{i}": "v"}}))
        await out.send(json.dumps({"type": "set_status", "status_code": 201}))
        await out.send(b"body")
    # the body ends once the function returned too
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "ok"})
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 201 and response.headers["x-h49"] == "v" and response.content == b"body"


async def test_a_request_past_channels_max_open_is_503_and_leaves_no_channel_behind() -> None:
    """Each request takes two channels: past ``channels.max_open`` the request is 503 with Retry-After, naming the
    setting, and the first channel (made before the second was refused) is dropped, not left for 300 s."""
    from iii_engine.config import ChannelSettings

    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0})
    config = EngineConfig(host="127.0.0.1", port=0, modules=[spec], channels=ChannelSettings(max_open=1))
    async with Engine(config=config) as engine:
        module = engine.module("http_api")
        assert isinstance(module, RestApiModule)
        worker = await _route(engine, "served", "served")
        async with httpx.AsyncClient(base_url=module.base_url, timeout=20) as client:
            response = await client.get("/served")
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json() == {"error": "too many open channels (channels.max_open 1); retry later"}
        assert len(engine.channels) == 0
        await worker.nothing_for(0.1)  # never invoked
