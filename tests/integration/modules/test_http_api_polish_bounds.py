"""REST API bounds left open by the first round (issue 10 follow-ups): empty binary frames before the first body
chunk count against the response head's bound, and the engine's stop answers a request whose condition function
never answers at once."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii_engine.modules.http.channels import channel_url
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api_bounds import Start, _route, api

pytestmark = pytest.mark.our_engine("configures the REST API module and stops our engine")
__all__ = ["api"]  # the fixture, shared with test_http_api_bounds


async def test_empty_binary_frames_count_against_the_response_head(api: Start) -> None:
    engine, _module, client = await api(default_timeout=20_000)
    worker = await _route(engine, "empties", "empties")
    # headers only: before the fix the response started (200) and its body stayed open with the writer
    waiting = asyncio.ensure_future(client.send(client.build_request("GET", "/empties"), stream=True))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        with contextlib.suppress(ConnectionClosed):  # the engine closes the channel at the 101st frame
            for _ in range(10_000):  # before: all skipped; only default_timeout (20 s) would have stopped more
                await out.send(b"")
            await out.send(b"body")
        response = await asyncio.wait_for(waiting, 10)  # well before default_timeout
        assert response.status_code == 502, response.status_code  # before: 200, and b"body" streaming
        assert "more than 100 control frames (or empty binary frames)" in (await response.aread()).decode()
        await asyncio.wait_for(out.wait_closed(), 10)
        # The relay tells the writer its reader left (4002); the engine's reason is in its log and the 502 body.
        assert out.close_code == 4002, (out.close_code, out.close_reason)


async def test_a_few_empty_binary_frames_are_not_the_end_of_the_body(api: Start) -> None:
    engine, _module, client = await api()
    worker = await _route(engine, "few", "few")
    waiting = asyncio.ensure_future(client.get("/few"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        for _ in range(50):
            await out.send(b"")
        await out.send(b"bo")
        await out.send(b"")
        await out.send(b"dy")
    # the body ends once the function returned too
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "few"})
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 200 and response.content == b"body"


async def test_stop_answers_a_request_inside_its_condition_function_at_once(api: Start) -> None:
    engine, _module, client = await api(default_timeout=20_000)
    worker = await RawWorker.connect(engine.url)
    await worker.register("guarded")
    await worker.register("guarded::condition")
    await worker.send({"type": "registertrigger", "id": "t-guarded", "trigger_type": "http", "function_id": "guarded",
                       "config": {"api_path": "guarded", "http_method": "GET",
                                  "condition_function_id": "guarded::condition"}})
    await worker.sync()
    waiting = asyncio.ensure_future(client.get("/guarded"))
    await worker.expect("invokefunction", function_id="guarded::condition")  # the condition never answers
    await asyncio.wait_for(engine.stop(), 10)  # before: it waited out default_timeout (20 s)
    response = await asyncio.wait_for(waiting, 5)
    assert response.status_code == 503 and "stopping" in response.json()["error"], response.text
    assert not engine.invocations.pending
