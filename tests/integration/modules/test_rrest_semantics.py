"""R-REST on a0783bb, against a real engine, raw workers and real HTTP: HEAD answers, a handler that attaches to its
response channel and still returns a result, a body the handler never reads, the deadline and the module's stop
while the request waits for the handler to attach, and requests racing the last channels under max_open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import websockets

from iii_engine.modules.http.channels import channel_url
from tests.integration.modules.test_attack_a5_reserved_rest import OPTS, start
from tests.integration.modules.test_http_api import answer, worker_with_route

pytestmark = pytest.mark.our_engine("configures the REST API module and the relay's limits")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def test_a_head_request_with_a_json_result_gets_its_head_only(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "h", "h", "HEAD")
    call = asyncio.ensure_future(client.head("/h"))
    req = await worker.expect("invokefunction")
    assert req["data"]["method"] == "HEAD"
    await answer(worker, req, {"status_code": 200, "body": {"a": 1}})
    r = await call
    assert r.status_code == 200 and r.content == b""
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_a_head_request_with_a_streamed_answer_gets_its_head_only(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "h", "h", "HEAD")
    call = asyncio.ensure_future(client.head("/h"))
    req = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, req["data"]["response"]), **OPTS) as ws:
        await ws.send(json.dumps({"type": "set_headers", "headers": {"content-length": "5"}}))
        await ws.send(b"hello")
    await answer(worker, req)
    r = await call
    assert r.status_code == 200 and r.content == b""
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_a_handler_attaching_its_response_and_returning_a_result_answers_with_it(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "a", "a")
    call = asyncio.ensure_future(client.get("/a"))
    req = await worker.expect("invokefunction")
    ws = await websockets.connect(channel_url(engine.url, req["data"]["response"]), **OPTS)
    await ws.send(json.dumps({"type": "set_status", "status_code": 202}))
    await answer(worker, req, {"status_code": 201, "body": {"r": 1}})
    r = await call
    assert r.status_code == 201 and r.json() == {"r": 1}
    with pytest.raises(websockets.ConnectionClosed) as closed:  # its writer hears the channel went
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_a_body_the_handler_never_reads_leaves_no_channel(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack)
    worker = await worker_with_route(engine, "b", "b", "POST")
    call = asyncio.ensure_future(client.post("/b", content=b"x" * 300_000))
    req = await worker.expect("invokefunction")
    await answer(worker, req, {"body": 1})
    r = await call
    assert r.status_code == 200
    await asyncio.wait_for(engine.channels.wait_idle(), 5)


async def test_the_deadline_while_waiting_for_the_attach_is_504_and_drops_the_channels(stack: AsyncExitStack) -> None:
    engine, module, client = await start(stack, default_timeout=300)
    worker = await worker_with_route(engine, "d", "d")
    call = asyncio.ensure_future(client.get("/d"))
    req = await worker.expect("invokefunction")
    r = await call
    assert r.status_code == 504
    with pytest.raises(websockets.InvalidStatus) as refused:  # the channel went with the request
        await websockets.connect(channel_url(engine.url, req["data"]["response"]), **OPTS)
    assert refused.value.response.status_code == 404
    await asyncio.wait_for(engine.channels.wait_idle(), 5)
    assert not module._races


async def test_the_modules_stop_while_waiting_for_the_handler_to_attach_is_503(stack: AsyncExitStack) -> None:
    engine, module, client = await start(stack)
    worker = await worker_with_route(engine, "s", "s")
    call = asyncio.ensure_future(client.get("/s"))
    await worker.expect("invokefunction")
    await module.stop()
    r = await call
    assert r.status_code == 503
    assert len(engine.channels) == 0


async def test_a_request_needs_exactly_two_free_channels_under_max_open(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack, channels={"max_open": 4})
    worker = await worker_with_route(engine, "m", "m")
    engine.channels.create(None, owner=None)
    engine.channels.create(None, owner=None)  # 2 open: exactly room for a pair
    call = asyncio.ensure_future(client.get("/m"))
    req = await worker.expect("invokefunction")
    assert len(engine.channels) == 4
    r2 = await client.get("/m")  # none left
    assert r2.status_code == 503 and len(engine.channels) == 4
    await answer(worker, req, {"body": 1})
    assert (await call).status_code == 200
    engine.channels.create(None, owner=None)  # 3 open: one short
    r3 = await client.get("/m")
    assert r3.status_code == 503 and len(engine.channels) == 3


async def test_requests_racing_the_last_channels_are_served_or_refused_whole(stack: AsyncExitStack) -> None:
    engine, _, client = await start(stack, channels={"max_open": 7})
    worker = await worker_with_route(engine, "m", "m")
    calls = [asyncio.ensure_future(client.get("/m")) for _ in range(12)]
    held = [await worker.expect("invokefunction") for _ in range(3)]
    assert len(engine.channels) == 6
    rs = await asyncio.gather(*calls[3:])
    for r in held:
        await answer(worker, r, {"body": 1})
    codes = [r.status_code for r in rs] + [r.status_code for r in await asyncio.gather(*calls[:3])]
    assert codes.count(200) == 3 and codes.count(503) == 9
    await asyncio.wait_for(engine.channels.wait_idle(), 5)
