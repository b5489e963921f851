"""Attacks on the REST API fast path (filled request bodies, local response readers, one deadline timer,
slot_timeout): hostile or unlucky handlers and clients. After each one, nothing may be left behind: no channel
in the relay, no background task, no concurrency slot, no claimed body bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from typing import Any

import httpx
import pytest
import websockets

from iii_engine import Engine
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.modules import test_http_api as _base
from tests.integration.modules.test_http_api import Start, answer, worker_with_route

api = _base.api  # the same engine + client factory fixture

pytestmark = pytest.mark.our_engine("configures the REST API module and reads our relay")


def _our_tasks() -> list[asyncio.Task[Any]]:
    """Live tasks running code of the REST API module or the channel relay."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        name = code.co_filename if code is not None else ""
        if "iii_engine/modules/http" in name or "iii_engine/channels" in name:
            found.append(task)
    return found


async def _settled(engine: Engine, module: RestApiModule, limit: int) -> None:
    """Everything a request held is given back (waits for the background clean-up, bounded)."""
    await asyncio.wait_for(engine.channels.wait_idle(), 5)
    if module._background:
        await asyncio.wait_for(asyncio.gather(*module._background, return_exceptions=True), 5)
    assert len(engine.channels) == 0
    assert module.in_flight == 0 and module.receiving == 0 and module.buffered_bytes == 0
    assert module._limit is not None and module._limit.free == limit
    assert _our_tasks() == []


async def test_worker_killed_mid_stream_cuts_the_response_and_leaves_nothing(api: Start) -> None:
    engine, module, client = await api()
    worker = await worker_with_route(engine, "dies", "dies")
    call = asyncio.ensure_future(client.send(client.build_request("GET", "/dies"), stream=True))
    request = await worker.expect("invokefunction")
    writer = await websockets.connect(channel_url(engine.url, request["data"]["response"]))
    await writer.send(json.dumps({"type": "set_status", "status_code": 206}))
    await writer.send(b"partial ")
    response = await call
    assert response.status_code == 206
    # SIGKILL: both of the worker's sockets vanish without a Close frame.
    writer.transport.abort()
    worker.ws.transport.abort()
    with pytest.raises(httpx.HTTPError):
        await asyncio.wait_for(response.aread(), 5)  # a truncated body must not look complete
    await _settled(engine, module, 1024)


async def test_client_gone_mid_stream_stops_the_handler_s_writer(api: Start) -> None:
    engine, module, client = await api()
    worker = await worker_with_route(engine, "firehose", "firehose")
    call = asyncio.ensure_future(client.send(client.build_request("GET", "/firehose"), stream=True))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(b"x" * 1024)
        response = await call
        await response.aclose()  # the client hangs up while the handler still writes
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(100_000):  # bounded: the relay must close the writer long before this ends
                await writer.send(b"y" * 65536)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
    await answer(worker, request)
    await _settled(engine, module, 1024)


async def test_client_gone_before_the_answer_frees_the_slot_when_the_handler_answers(api: Start) -> None:
    engine, module, _ = await api(concurrency_request_limit=1)
    worker = await worker_with_route(engine, "late", "late")
    with socket.create_connection(("127.0.0.1", module.port)) as raw:
        raw.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        request = await worker.expect("invokefunction")
    await answer(worker, request, {"body": "too late"})
    await _settled(engine, module, 1)


async def test_oversize_handler_message_is_500(api: Start) -> None:
    engine, module, client = await api()
    engine.channels.max_message_size = 1000  # the relay's per-message limit, read when a channel is created
    worker = await worker_with_route(engine, "big", "big")
    call = asyncio.ensure_future(client.get("/big"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as writer:
        await writer.send(b"z" * 5000)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(writer.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await answer(worker, request)  # null result: the aborted stream is all there is
    response = await asyncio.wait_for(call, 10)
    assert response.status_code == 500 and "4001" in response.text
    await _settled(engine, module, 1024)


@pytest.mark.parametrize("framing", ["content-length-0", "chunked-empty", "no-body"])
async def test_empty_bodies_reach_the_handler_as_an_empty_stream(api: Start, framing: str) -> None:
    engine, module, _ = await api()
    worker = await worker_with_route(engine, "empty", "empty", "POST")
    headers = {"content-length-0": b"Content-Length: 0\r\n", "chunked-empty": b"Transfer-Encoding: chunked\r\n",
               "no-body": b""}[framing]
    body = b"0\r\n\r\n" if framing == "chunked-empty" else b""
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"POST /empty HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["request_body"])) as ws:
        assert [m async for m in ws] == []
    await answer(worker, request, {"body": "ok"})
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200"), status
    writer.close()
    await _settled(engine, module, 1024)


async def test_body_read_twice_second_reader_refused_and_never_read_is_dropped(api: Start) -> None:
    engine, module, client = await api()
    worker = await worker_with_route(engine, "twice", "twice", "POST")
    call = asyncio.ensure_future(client.post("/twice", content=b"a" * 200_000))
    request = await worker.expect("invokefunction")
    ref = request["data"]["request_body"]
    async with websockets.connect(channel_url(engine.url, ref), max_size=None) as first:
        try:  # refused: 4009 while the first reader is attached, 404 once it took the whole stream
            async with websockets.connect(channel_url(engine.url, ref), max_size=None) as second:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(second.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 404
        assert b"".join([m async for m in first if isinstance(m, bytes)]) == b"a" * 200_000
    await answer(worker, request, {"body": 1})
    assert (await call).json() == 1
    # Never read at all: the filled channel is dropped with the request.
    call = asyncio.ensure_future(client.post("/twice", content=b"b" * 300_000))
    await answer(worker, await worker.expect("invokefunction"), {"body": 2})
    assert (await call).json() == 2
    await _settled(engine, module, 1024)


async def test_body_exactly_at_the_limit_passes_and_one_over_is_413(api: Start) -> None:
    engine, module, client = await api(max_body_bytes=1000)
    worker = await worker_with_route(engine, "edge", "edge", "POST")
    call = asyncio.ensure_future(client.post("/edge", content=b"e" * 1000))
    request = await worker.expect("invokefunction")
    assert await asyncio.wait_for(_read(engine, request["data"]["request_body"]), 5) == b"e" * 1000
    await answer(worker, request, {"body": "ok"})
    assert (await call).status_code == 200
    assert (await client.post("/edge", content=b"e" * 1001)).status_code == 413

    async def chunks() -> Any:
        for _ in range(11):
            yield b"c" * 91  # 1001 bytes, no Content-Length
    assert (await client.post("/edge", content=chunks())).status_code == 413
    await _settled(engine, module, 1024)


async def _read(engine: Engine, ref: dict[str, Any]) -> bytes:
    async with websockets.connect(channel_url(engine.url, ref), max_size=None) as ws:
        return b"".join([m async for m in ws if isinstance(m, bytes)])


async def test_a_burst_past_the_limit_gets_only_200_or_503_and_gives_every_slot_back(api: Start) -> None:
    engine, module, client = await api(concurrency_request_limit=2, slot_timeout=50)
    worker = await worker_with_route(engine, "busy", "busy/:n")
    total = 30
    calls = [asyncio.ensure_future(client.get(f"/busy/{n}")) for n in range(total)]
    served = 0

    async def serve() -> None:
        nonlocal served
        while True:
            request = await worker.expect("invokefunction", wait=10)
            await asyncio.sleep(0.03)  # simulated work: the burst outlives slot_timeout
            await answer(worker, request, {"body": request["data"]["path_params"]["n"]})
            served += 1

    server = asyncio.ensure_future(serve())
    responses = await asyncio.gather(*calls)
    server.cancel()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    assert statuses.count(200) == served
    for n, response in enumerate(responses):
        if response.status_code == 200:
            assert response.json() == str(n)
    await _settled(engine, module, 2)


async def test_a_handler_that_never_answers_times_out_and_leaves_nothing(api: Start) -> None:
    engine, module, client = await api(default_timeout=200)
    worker = await worker_with_route(engine, "mute", "mute", "POST")
    assert (await client.post("/mute", content=b"body")).status_code == 504
    request = await worker.expect("invokefunction")
    # the handler attaches to its response writer after the deadline: refused, not served into the void
    with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)):
        async with websockets.connect(channel_url(engine.url, request["data"]["response"])) as late:
            await asyncio.wait_for(late.recv(), 5)
    await _settled(engine, module, 1024)



async def test_engine_stop_cuts_streams_that_would_never_end(api: Start) -> None:
    """An SSE-like stream whose handler never closes, and one whose client stopped reading: stop() must not wait
    for them (aiohttp alone waits 60 s, then another 60 s after cancelling the request)."""
    engine, module, client = await api(default_timeout=1000)
    worker = await worker_with_route(engine, "endless", "endless/:n")
    endless = asyncio.ensure_future(client.send(client.build_request("GET", "/endless/1"), stream=True))
    first = await worker.expect("invokefunction")
    idle_writer = await websockets.connect(channel_url(engine.url, first["data"]["response"]))
    await idle_writer.send(b"first event")
    response = await endless
    _, raw = await asyncio.open_connection("127.0.0.1", module.port)
    raw.write(b"GET /endless/2 HTTP/1.1\r\nHost: x\r\n\r\n")  # this client never reads its response
    second = await worker.expect("invokefunction")
    busy_writer = await websockets.connect(channel_url(engine.url, second["data"]["response"]), max_size=None)

    async def flood() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(10_000):
                await busy_writer.send(b"f" * 65536)

    flooding = asyncio.ensure_future(flood())
    await asyncio.wait_for(engine.channels.wait_full(second["data"]["response"]["channel_id"]), 10)
    waiting = asyncio.ensure_future(client.get("/endless/3"))  # its handler never answers: stop answers 503
    await worker.expect("invokefunction")
    await asyncio.wait_for(engine.stop(), 10)
    with pytest.raises(httpx.HTTPError):
        await asyncio.wait_for(response.aread(), 5)
    outcome = (await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 5))[0]
    assert isinstance(outcome, httpx.HTTPError) or outcome.status_code == 503
    await asyncio.wait_for(flooding, 10)
    assert len(engine.channels) == 0 and not module._streaming and _our_tasks() == []
    raw.close()
    await idle_writer.close()
    await busy_writer.close()


async def test_a_held_request_keeps_its_body_in_memory_once(api: Start) -> None:
    """The body is claimed once against max_buffered_bytes, so it must be held once: queued in the request_body
    channel, not also as the received buffer, while the handler works."""
    import tracemalloc

    engine, module, client = await api(max_body_bytes=32 << 20)
    worker = await worker_with_route(engine, "hold", "hold", "POST")
    body = os.urandom(8 << 20)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call = asyncio.ensure_future(client.post("/hold", content=body))
        request = await worker.expect("invokefunction")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert module.buffered_bytes == len(body)
    assert held < 1.5 * len(body), f"{held / len(body):.2f} x the body held while the handler works"
    assert await asyncio.wait_for(_read(engine, request["data"]["request_body"]), 10) == body
    await answer(worker, request, {"body": "ok"})
    assert (await call).status_code == 200
    await _settled(engine, module, 1024)
