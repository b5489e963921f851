"""REST API module end to end: a real engine, raw workers over real sockets, real HTTP with httpx.

The worker side is a plain WebSocket client (``RawWorker``) that answers invocations by hand and opens the
``request_body`` / ``response`` channels itself, so every frame the engine must handle is exercised explicitly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import websockets

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.config import ChannelSettings
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("configures the REST API module and reads our relay")

Start = Callable[..., Awaitable[tuple[Engine, RestApiModule, httpx.AsyncClient]]]


@pytest.fixture
async def api() -> AsyncIterator[Start]:
    """Factory: an engine with only the REST API module (free ports) and an httpx client for it."""
    async with AsyncExitStack() as stack:

        async def start(production_channels: bool = False,
                        **settings: Any) -> tuple[Engine, RestApiModule, httpx.AsyncClient]:
            spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, **settings})
            config = EngineConfig(host="127.0.0.1", port=0, modules=[spec],
                                  channels=ChannelSettings(production_mode=production_channels))
            engine = await stack.enter_async_context(Engine(config=config))
            module = engine.module("http_api")
            assert isinstance(module, RestApiModule), engine.unavailable_modules
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=module.base_url, timeout=20))
            return engine, module, client

        yield start


async def worker_with_route(engine: Engine, function_id: str, api_path: str, method: str = "GET",
                            trigger_id: str = "t1", **config: Any) -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    await worker.register(function_id)
    await add_route(worker, function_id, api_path, method, trigger_id, **config)
    return worker


async def add_route(worker: RawWorker, function_id: str, api_path: str, method: str = "GET",
                    trigger_id: str = "t1", **config: Any) -> None:
    await worker.send({"type": "registertrigger", "id": trigger_id, "trigger_type": "http",
                       "function_id": function_id, "config": {"api_path": api_path, "http_method": method, **config}})
    await worker.sync()


async def answer(worker: RawWorker, request: dict[str, Any], result: Any = None, error: Any = None) -> None:
    frame: dict[str, Any] = {"type": "invocationresult", "invocation_id": request["invocation_id"],
                             "function_id": request["function_id"]}
    if result is not None:
        frame["result"] = result
    if error is not None:
        frame["error"] = error
    await worker.send(frame)


async def read_channel(engine: Engine, ref: dict[str, Any]) -> bytes:
    async with websockets.connect(channel_url(engine.url, ref), max_size=None, compression=None) as ws:
        return b"".join([m if isinstance(m, bytes) else m.encode() async for m in ws])


async def test_unknown_setting_keeps_the_module_from_starting() -> None:
    spec = ModuleSpec("modules::api::RestApiModule", {"port": 0, "prot": 3111})
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec]), allow_degraded=True) as engine:
        assert engine.module("http_api") is None
        assert "unknown key 'prot'" in engine.unavailable_modules["modules::api::RestApiModule"]


# -- JSON path ---------------------------------------------------------------------------------------------------


async def test_json_request_object_and_response(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "items.update", "/test/items/:id", "put")
    call = asyncio.ensure_future(client.put("/test/items/42?q=a&q=b&page=2", json={"name": "x"},
                                            headers={"X-Custom": "Yes"}))
    request = await worker.expect("invokefunction", function_id="items.update")
    data = request["data"]
    assert data["path_params"] == {"id": "42"}
    assert data["query_params"] == {"q": "b", "page": "2"}
    assert data["headers"]["x-custom"] == "Yes"
    assert all(name == name.lower() for name in data["headers"])
    assert data["path"] == "/test/items/:id"
    assert data["method"] == "PUT"
    assert data["body"] == {"name": "x"}
    assert data["trigger"] == {"type": "http", "path": "/test/items/:id", "method": "PUT"}
    assert data["request_body"]["direction"] == "read" and data["response"]["direction"] == "write"
    # M6: the raw JSON body is in the channel and the channel is closed before the handler answers.
    assert await asyncio.wait_for(read_channel(engine, data["request_body"]), 5) == b'{"name":"x"}'
    await answer(worker, request, {"status_code": 201, "body": {"id": "42"}, "headers": {"X-Extra": "1"}})
    response = await call
    assert response.status_code == 201
    assert response.json() == {"id": "42"}
    assert response.headers["x-extra"] == "1"  # M4
    assert response.headers["content-type"] == "application/json"


async def test_status_code_alias_default_body_and_invalid_json(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "f", "alias", "POST")
    call = asyncio.ensure_future(client.post("/alias", content=b"{not json", headers={"content-type":
                                                                                     "application/json"}))
    request = await worker.expect("invokefunction")
    assert request["data"]["body"] is None
    await answer(worker, request, {"statusCode": 202})  # M5: ApiResponse dumped by alias
    response = await call
    assert (response.status_code, response.json()) == (202, {})


async def test_handler_error_is_500_with_error_id(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "boom", "boom")
    call = asyncio.ensure_future(client.get("/boom"))
    request = await worker.expect("invokefunction")
    await answer(worker, request, error={"code": "invocation_failed", "message": "kaput"})
    response = await call
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "kaput"
    assert len(body["error_id"]) == 32 and int(body["error_id"], 16) >= 0


async def test_unknown_route_is_404_and_unregister_removes_route(api: Start) -> None:
    engine, _, client = await api()
    response = await client.get("/health")
    assert (response.status_code, response.text) == (404, "Not Found")
    worker = await worker_with_route(engine, "health", "health", trigger_id="health-trigger")
    call = asyncio.ensure_future(client.get("/health"))
    await answer(worker, await worker.expect("invokefunction"), {"status_code": 200, "body": {"status": "ok"}})
    assert (await call).json() == {"status": "ok"}
    assert (await client.post("/health")).status_code == 404  # method is part of the route
    await worker.send({"type": "unregistertrigger", "id": "health-trigger", "trigger_type": "http"})
    await worker.sync()
    assert (await client.get("/health")).status_code == 404


async def test_same_route_key_is_replaced_and_static_segments_win(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "old", "things/:id", trigger_id="a")
    await worker.register("new")
    await worker.register("special")
    await add_route(worker, "new", "/things/:id", trigger_id="b")  # same key without the leading slash
    await add_route(worker, "special", "things/special", trigger_id="c")
    call = asyncio.ensure_future(client.get("/things/1"))
    await answer(worker, await worker.expect("invokefunction", function_id="new"), {"body": "n"})
    assert (await call).json() == "n"
    call = asyncio.ensure_future(client.get("/things/special"))
    await answer(worker, await worker.expect("invokefunction", function_id="special"), {"body": "s"})
    assert (await call).json() == "s"
    # Unregistering the replaced trigger does not remove the route that replaced it.
    await worker.send({"type": "unregistertrigger", "id": "a", "trigger_type": "http"})
    await worker.sync()
    call = asyncio.ensure_future(client.get("/things/2"))
    await answer(worker, await worker.expect("invokefunction", function_id="new"), {"body": "still"})
    assert (await call).json() == "still"


async def test_a_route_taken_by_another_worker_comes_back_when_that_worker_leaves(api: Start) -> None:
    engine, _, client = await api()
    first = await worker_with_route(engine, "a.echo", "echo", "POST", trigger_id="a")
    second = await worker_with_route(engine, "b.echo", "echo", "POST", trigger_id="b")
    call = asyncio.ensure_future(client.post("/echo"))
    await answer(second, await second.expect("invokefunction", function_id="b.echo"), {"body": "b"})
    assert (await call).json() == "b"
    await second.close()
    # before: 404 for good, though the first worker and its trigger stayed registered
    call = asyncio.ensure_future(client.post("/echo"))
    await answer(first, await first.expect("invokefunction", function_id="a.echo"), {"body": "a"})
    assert (await call).json() == "a"


async def test_condition_false_is_422_and_true_runs_the_handler(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "guarded", "guarded", "POST", condition_function_id="cond")
    await worker.register("cond")
    call = asyncio.ensure_future(client.post("/guarded", json={"allow": False}))
    check = await worker.expect("invokefunction", function_id="cond")
    assert check["data"]["body"] == {"allow": False}
    assert "request_body" not in check["data"] and "response" not in check["data"]
    await answer(worker, check, False)
    response = await call
    assert response.status_code == 422
    assert response.json() == {"error": "Request condition not met", "skipped": True}

    call = asyncio.ensure_future(client.post("/guarded", json={"allow": True}))
    await answer(worker, await worker.expect("invokefunction", function_id="cond"), True)
    await answer(worker, await worker.expect("invokefunction", function_id="guarded"), {"body": "ran"})
    assert (await call).json() == "ran"


async def test_timeout_is_504(api: Start) -> None:
    engine, _, client = await api(default_timeout=300)
    worker = await worker_with_route(engine, "slow", "slow")
    response = await client.get("/slow")  # the worker never answers
    assert response.status_code == 504
    assert (await worker.expect("invokefunction"))["function_id"] == "slow"


async def test_null_result_without_writer_close_is_504(api: Start) -> None:
    engine, _, client = await api(default_timeout=400)
    worker = await worker_with_route(engine, "lazy", "lazy")
    call = asyncio.ensure_future(client.get("/lazy"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(json.dumps({"type": "set_status", "status_code": 201}))
        await answer(worker, request)  # null result, writer left open
        assert (await call).status_code == 504


# -- streamed responses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("production_channels", [False, True], ids=["our-relay", "production-relay"])
async def test_streamed_response_with_status_headers_and_empty_body(api: Start, production_channels: bool) -> None:
    engine, _, client = await api(production_channels=production_channels)
    worker = await worker_with_route(engine, "stream", "stream")
    call = asyncio.ensure_future(client.get("/stream"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(json.dumps({"type": "set_status", "status_code": 206}))
        await writer.send(json.dumps({"type": "set_headers", "headers": {"content-type": "text/plain",
                                                                          "x-part": "yes"}}))
        await writer.send(b"hello ")
        await writer.send(json.dumps({"type": "set_status", "status_code": 500}))  # ignored: body started
        await writer.send(b"world")
    await answer(worker, request)
    response = await call
    assert response.status_code == 206
    assert response.headers["x-part"] == "yes" and response.headers["content-type"] == "text/plain"
    assert response.text == "hello world"

    # A writer that closes without any body chunk: status and headers only.
    call = asyncio.ensure_future(client.get("/stream"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(json.dumps({"type": "set_status", "status_code": 204}))
    await answer(worker, request)
    response = await call
    assert (response.status_code, response.content) == (204, b"")


async def test_first_chunk_wins_over_a_late_non_null_result(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "both", "both")
    call = asyncio.ensure_future(client.send(client.build_request("GET", "/both"), stream=True))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(b"streamed")
        response = await call  # headers are sent once the first chunk arrived
        await answer(worker, request, {})  # late: the stream already started
    body = await response.aread()
    assert (response.status_code, body) == (200, b"streamed")


async def test_server_sent_events_are_delivered_as_written(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "events", "events")
    call = asyncio.ensure_future(client.send(client.build_request("GET", "/events"), stream=True))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(json.dumps({"type": "set_headers", "headers": {"content-type": "text/event-stream",
                                                                          "cache-control": "no-cache"}}))
        await answer(worker, request)
        await writer.send(b"retry: 1000\n\n")
        response = await call
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.aiter_lines()
        assert [await anext(lines), await anext(lines)] == ["retry: 1000", ""]
        for n in range(3):
            await writer.send(f"event: tick\ndata: {n}\n\n".encode())
            # The next event is written only after this one reached the client: nothing is buffered.
            assert await asyncio.wait_for(anext(lines), 5) == "event: tick"
            assert await asyncio.wait_for(anext(lines), 5) == f"data: {n}"
            assert await asyncio.wait_for(anext(lines), 5) == ""
    await response.aclose()


async def test_writer_abort_mid_stream_breaks_the_http_response(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "abort", "abort")
    call = asyncio.ensure_future(client.get("/abort"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(b"partial")
        await writer.close(4000, "producer failed")
    await answer(worker, request)
    with pytest.raises(httpx.HTTPError):
        response = await call
        response.raise_for_status()


@pytest.mark.parametrize("production_channels", [False, True], ids=["our-relay", "production-relay"])
async def test_large_streamed_upload_and_download_keep_their_digests(api: Start, production_channels: bool) -> None:
    engine, _, client = await api(production_channels=production_channels)
    worker = await worker_with_route(engine, "copy", "copy", "POST")
    size = 8 * 1024 * 1024 + 123
    payload = os.urandom(size)
    digest = hashlib.sha256(payload).hexdigest()

    async def upload() -> AsyncIterator[bytes]:
        for start in range(0, size, 100_000):
            yield payload[start:start + 100_000]

    call = asyncio.ensure_future(client.send(client.build_request(
        "POST", "/copy", content=upload(), headers={"content-type": "application/octet-stream"}), stream=True))
    request = await worker.expect("invokefunction", wait=10)
    assert request["data"]["body"] is None
    received = hashlib.sha256()
    count = 0
    async with websockets.connect(channel_url(engine.url, request["data"]["request_body"]),
                                  max_size=None, compression=None) as reader:
        async for chunk in reader:
            assert isinstance(chunk, bytes)
            received.update(chunk)
            count += len(chunk)
    assert (count, received.hexdigest()) == (size, digest)

    async def echo() -> None:  # back as a streamed download in 64 KiB frames, read concurrently below
        async with websockets.connect(channel_url(engine.url, request["data"]["response"]),
                                      compression=None) as writer:
            await writer.send(json.dumps({"type": "set_headers", "headers": {"x-sha256": digest}}))
            for start in range(0, size, 65536):
                await writer.send(payload[start:start + 65536])
        await answer(worker, request)

    echoing = asyncio.ensure_future(echo())
    response = await call
    downloaded = hashlib.sha256()
    total = 0
    async for chunk in response.aiter_bytes():
        downloaded.update(chunk)
        total += len(chunk)
    await echoing
    assert response.headers["x-sha256"] == digest
    assert (total, downloaded.hexdigest()) == (size, digest)


@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
async def test_form_bodies_arrive_raw_through_request_body(api: Start, kind: str) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "form", "form", "POST")
    if kind == "urlencoded":
        call = asyncio.ensure_future(client.post("/form", data={"name": "iii", "n": "1"}))
    else:
        call = asyncio.ensure_future(client.post("/form", data={"name": "iii"},
                                                 files={"file": ("a.bin", b"\x00\x01file-content", "x/y")}))
    request = await worker.expect("invokefunction")
    raw = await read_channel(engine, request["data"]["request_body"])
    content_type = request["data"]["headers"]["content-type"]
    assert request["data"]["body"] is None
    if kind == "urlencoded":
        assert content_type == "application/x-www-form-urlencoded"
        assert raw == b"name=iii&n=1"
    else:
        boundary = content_type.split("boundary=", 1)[1]
        assert content_type.startswith("multipart/form-data")
        assert raw.startswith(f"--{boundary}".encode()) and raw.rstrip().endswith(f"--{boundary}--".encode())
        assert b"\x00\x01file-content" in raw and b'name="name"' in raw
    await answer(worker, request, {"body": len(raw)})
    assert (await call).json() == len(raw)


# -- CORS and the concurrency limit ------------------------------------------------------------------------------


async def test_cors_permissive_by_default(api: Start) -> None:
    engine, _, client = await api()
    worker = await worker_with_route(engine, "c", "c", "POST")
    preflight = await client.options("/c", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "x-token"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "x-token"
    call = asyncio.ensure_future(client.post("/c", json={}, headers={"Origin": "https://app.example"}))
    await answer(worker, await worker.expect("invokefunction"), {"body": 1})
    assert (await call).headers["access-control-allow-origin"] == "*"


async def test_cors_restricted_origins_and_methods(api: Start) -> None:
    engine, _, client = await api(cors={"allowed_origins": ["https://good.example"], "allowed_methods": ["GET"]})
    worker = await worker_with_route(engine, "c", "c")
    ok = await client.options("/c", headers={"Origin": "https://good.example", "Access-Control-Request-Method": "GET"})
    assert ok.headers["access-control-allow-origin"] == "https://good.example"
    assert ok.headers["access-control-allow-methods"] == "GET"
    bad_method = await client.options("/c", headers={"Origin": "https://good.example",
                                                     "Access-Control-Request-Method": "DELETE"})
    assert bad_method.status_code == 403
    call = asyncio.ensure_future(client.get("/c", headers={"Origin": "https://evil.example"}))
    await answer(worker, await worker.expect("invokefunction"), {"body": 1})
    response = await call
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


async def test_concurrency_limit_queues_excess_requests(api: Start) -> None:
    engine, module, client = await api(concurrency_request_limit=2)
    worker = await worker_with_route(engine, "hold", "hold")
    calls = [asyncio.ensure_future(client.get("/hold")) for _ in range(5)]
    held = [await worker.expect("invokefunction") for _ in range(2)]
    await worker.nothing_for(0.3)  # proves an absence: the third request waits for a permit
    assert module.in_flight == 2
    for request in held:
        await answer(worker, request, {"body": "ok"})
    for _ in range(3):
        await answer(worker, await worker.expect("invokefunction"), {"body": "ok"})
    assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 5


async def test_slot_wait_is_bounded_by_slot_timeout(api: Start) -> None:
    engine, module, client = await api(concurrency_request_limit=1, slot_timeout=200)
    worker = await worker_with_route(engine, "hold", "hold")
    first = asyncio.ensure_future(client.get("/hold"))
    held = await worker.expect("invokefunction")
    refused = await client.get("/hold")  # the only slot stays busy past slot_timeout
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "slot_timeout" in refused.json()["error"]
    await answer(worker, held, {"body": "ok"})
    assert (await first).status_code == 200
    after = asyncio.ensure_future(client.get("/hold"))  # the refused request gave nothing back twice
    await answer(worker, await worker.expect("invokefunction"), {"body": "again"})
    assert (await after).json() == "again"
    assert module.in_flight == 0 and not worker.backlog  # the refused request never reached the handler


async def test_concurrent_load_never_exceeds_the_limit(api: Start) -> None:
    limit, total = 8, 200
    engine, _, client = await api(concurrency_request_limit=limit)
    worker = await worker_with_route(engine, "load", "load/:n")
    outstanding = 0
    peak = 0
    answered = 0
    done = asyncio.Event()

    async def serve(request: dict[str, Any]) -> None:
        nonlocal outstanding, answered
        await asyncio.sleep(0.002)  # simulated work, so requests overlap
        outstanding -= 1
        await answer(worker, request, {"body": request["data"]["path_params"]["n"]})
        answered += 1
        if answered == total:
            done.set()

    async def serve_all() -> None:
        nonlocal outstanding, peak
        tasks = []
        for _ in range(total):
            request = await worker.expect("invokefunction", wait=20)
            outstanding += 1
            peak = max(peak, outstanding)
            tasks.append(asyncio.ensure_future(serve(request)))
        await asyncio.gather(*tasks)
        assert done.is_set()

    server = asyncio.ensure_future(serve_all())
    responses = await asyncio.gather(*(client.get(f"/load/{n}") for n in range(total)))
    await server
    assert sorted(int(r.json()) for r in responses) == list(range(total))
    assert 1 < peak <= limit


async def test_per_request_channels_are_discarded_when_the_relay_can(api: Start,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    engine, _, client = await api()
    discarded: list[str] = []
    released = asyncio.Event()

    def discard(channel_id: str) -> None:  # stands in for the relay method requested from the channels module
        discarded.append(channel_id)
        if len(discarded) == 2:
            released.set()

    monkeypatch.setattr(engine.channels, "discard", discard, raising=False)
    worker = await worker_with_route(engine, "j", "j")
    call = asyncio.ensure_future(client.get("/j"))
    request = await worker.expect("invokefunction")
    await answer(worker, request, {"body": 1})
    assert (await call).json() == 1
    await asyncio.wait_for(released.wait(), 5)
    assert sorted(discarded) == sorted([request["data"]["request_body"]["channel_id"],
                                        request["data"]["response"]["channel_id"]])


@pytest.mark.parametrize("production_channels", [False, True], ids=["our-relay", "production-relay"])
async def test_relay_holds_no_channels_after_requests(api: Start, production_channels: bool) -> None:
    """JSON results (channels never opened by the handler) and streamed responses both leave nothing behind."""
    engine, _, client = await api(production_channels=production_channels)
    worker = await worker_with_route(engine, "mixed", "mixed", "POST")
    for n in range(6):
        call = asyncio.ensure_future(client.post("/mixed", json={"n": n}))
        request = await worker.expect("invokefunction")
        if n % 2:
            async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
                await writer.send(f"streamed {n}".encode())
            await answer(worker, request)
            assert (await call).text == f"streamed {n}"
        else:
            await answer(worker, request, {"body": n})
            assert (await call).json() == n
    # Discarding happens right after each response, in the background; the relay says when it is empty.
    await asyncio.wait_for(engine.channels.wait_idle(), 5)
    assert len(engine.channels) == 0
