"""A handler's status that is no HTTP status, or a header value that is no text, is answered 502 naming it (attack
on the REST API): before, a ``status_code`` of ``"500"``, ``600`` or ``-1`` was answered 200 (a failure reported as
a success), and a list or object header value went out as its Python ``repr`` (``X-List: ['a', 'b']``). Numbers and
booleans are their JSON text; a ``null`` value leaves its header out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from iii_engine.modules.http.channels import channel_url
from tests.integration.modules.test_http_api_bounds import Start, _route, api

pytestmark = pytest.mark.our_engine("answers a handler's odd status or headers with 502 (ours)")
__all__ = ["api"]


async def _answered(api: Start, result: dict[str, Any]) -> Any:
    engine, _module, client = await api()
    worker = await _route(engine, "odd", "odd")
    waiting = asyncio.ensure_future(client.get("/odd"))
    request = await worker.expect("invokefunction")
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "odd",
                       "result": result})
    return await asyncio.wait_for(waiting, 10)


@pytest.mark.parametrize("status", ["500", 600, -1, 99, True, 201.5])
async def test_a_status_that_is_no_http_status_is_a_502(api: Start, status: Any) -> None:
    response = await _answered(api, {"status_code": status, "body": {"ok": True}})
    assert response.status_code == 502, response.status_code
    assert "is not an HTTP status" in response.text


@pytest.mark.parametrize("value", [["a", "b"], {"a": 1}])
async def test_a_header_value_that_is_no_text_is_a_502(api: Start, value: Any) -> None:
    response = await _answered(api, {"status_code": 200, "headers": {"x-odd": value}, "body": {}})
    assert response.status_code == 502 and "header 'x-odd' has a" in response.text, response.text


async def test_numbers_and_booleans_are_text_and_null_leaves_the_header_out(api: Start) -> None:
    response = await _answered(api, {"status_code": 201, "body": {},
                                     "headers": {"x-n": 3, "x-b": False, "x-none": None}})
    assert response.status_code == 201
    assert (response.headers["x-n"], response.headers["x-b"]) == ("3", "false")
    assert "x-none" not in response.headers


async def _streamed(api: Start, *frames: dict[str, Any]) -> Any:
    """The response to a handler that sends ``frames`` as control frames, then ``b"body"``, and returns null."""
    engine, _module, client = await api()
    worker = await _route(engine, "streamed", "streamed")
    waiting = asyncio.ensure_future(client.get("/streamed"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        for frame in frames:
            await out.send(json.dumps(frame))
        await out.send(b"body")
    # the body ends once the function returned too
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": "streamed"})
    return await asyncio.wait_for(waiting, 10)


async def test_a_streamed_status_that_is_no_http_status_is_a_502(api: Start) -> None:
    response = await _streamed(api, {"type": "set_status", "status_code": "404"})
    assert response.status_code == 502 and "status_code '404' is not an HTTP status" in response.text


async def test_the_last_set_status_counts_and_a_null_header_takes_an_earlier_one_out(api: Start) -> None:
    response = await _streamed(api, {"type": "set_status", "status_code": "404"},
                               {"type": "set_status", "status_code": 404},
                               {"type": "set_headers", "headers": {"x-debug": "1", "x-keep": "2"}},
                               {"type": "set_headers", "headers": {"x-debug": None}})
    assert response.status_code == 404 and response.content == b"body"
    assert "x-debug" not in response.headers and response.headers["x-keep"] == "2"
