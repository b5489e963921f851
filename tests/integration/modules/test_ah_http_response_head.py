"""A handler's response head (status, headers, Content-Length) is checked before it goes on the wire: one that
would desynchronise the connection, inject headers, or leave the client waiting is a 502 or a cut connection,
never a silently wrong response."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from iii_engine.modules.http.channels import channel_url
from tests.integration.modules.test_http_api_bounds import Start, _route, api

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")


async def _answer(start: Start, result: dict[str, Any]) -> httpx.Response:
    """One GET whose handler returns ``result``; the client gives up after 5 s (a hang fails the test)."""
    engine, _module, client = await start(default_timeout=10_000)
    worker = await _route(engine, "head", "head")
    waiting = asyncio.ensure_future(client.get("/head", timeout=5))
    request = await worker.expect("invokefunction")
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "head",
                       "result": result})
    return await waiting


@pytest.mark.parametrize("framing", [{"Content-Length": "5"}, {"Transfer-Encoding": "chunked"}])
async def test_a_results_framing_headers_do_not_frame_the_engine_s_body(api: Start, framing: dict[str, str]) -> None:
    # before: Content-Length 5 went out with a 102-byte body (the rest read as the next response) and
    # Transfer-Encoding: chunked with an unchunked body
    response = await _answer(api, {"body": "x" * 100, "headers": {**framing, "x-kept": "1"}})
    assert response.status_code == 200 and response.json() == "x" * 100
    assert response.headers["content-length"] == "102" and "transfer-encoding" not in response.headers
    assert response.headers["x-kept"] == "1"


@pytest.mark.parametrize("result, named", [
    ({"body": "hi", "headers": {"x-a": "a\r\nset-cookie: s=1"}}, "x-a"),
    ({"body": "hi", "headers": {"bad name": "v"}}, "bad name"),
    ({"status_code": 100, "body": "hi"}, "status 100"),
    ({"status_code": 101, "body": "hi"}, "status 101"),
])
async def test_a_result_head_that_cannot_be_sent_is_502_naming_it(api: Start, result: dict[str, Any],
                                                                  named: str) -> None:
    # before: the CR/LF value dropped the connection with no answer, the bad name went out as is, and a 1xx
    # status left the client waiting for a final response that never came
    response = await _answer(api, result)
    assert response.status_code == 502 and named in response.json()["error"]
    assert "set-cookie" not in response.headers and "bad name" not in response.headers


async def _stream(start: Start, headers: dict[str, str], chunks: list[bytes]) -> httpx.Response:
    """One GET whose handler sets ``headers`` on its response channel, then writes ``chunks`` and closes it."""
    engine, _module, client = await start(default_timeout=10_000)
    worker = await _route(engine, "down", "down")
    waiting = asyncio.ensure_future(client.get("/down", timeout=5))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        await out.send(json.dumps({"type": "set_headers", "headers": headers}))
        for chunk in chunks:
            await out.send(chunk)
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "down"})
    return await waiting


async def test_a_streamed_body_that_matches_its_content_length_is_served_with_it(api: Start) -> None:
    response = await _stream(api, {"Content-Length": "10"}, [b"hello", b"world"])
    assert response.status_code == 200 and response.content == b"helloworld"
    assert response.headers["content-length"] == "10"


@pytest.mark.parametrize("declared, chunks", [("100", [b"hello"]), ("3", [b"hello", b"world"])])
async def test_a_streamed_body_that_breaks_its_content_length_cuts_the_connection(
        api: Start, declared: str, chunks: list[bytes]) -> None:
    # before: a short body left the client waiting until the keep-alive timeout (here: its 5 s read timeout),
    # and a long one was cut to the stated length and looked complete ("hel"); the cut is a reset (ReadError),
    # or the client notices the body's end first (RemoteProtocolError)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await _stream(api, {"Content-Length": declared}, chunks)


@pytest.mark.parametrize("headers, named", [
    ({"Content-Length": "ten"}, "Content-Length"),
    ({"x-a": "a\r\nb: c"}, "x-a"),
])
async def test_a_streamed_head_that_cannot_be_sent_is_502_naming_it(api: Start, headers: dict[str, str],
                                                                    named: str) -> None:
    # before: the engine's HTTP writer raised mid-handler and the client got aiohttp's bare 500
    response = await _stream(api, headers, [b"body"])
    assert response.status_code == 502 and named in response.json()["error"]


async def test_a_bodiless_stream_keeps_its_headers_but_not_their_framing(api: Start) -> None:
    # before: a handler that closed its channel without a body after setting Content-Length: 100 left the
    # client waiting for 100 bytes
    response = await _stream(api, {"Content-Length": "100", "x-kept": "1"}, [])
    assert response.status_code == 200 and response.content == b"" and response.headers["x-kept"] == "1"


async def test_a_head_answer_keeps_the_content_length_it_states(api: Start) -> None:
    engine, _module, client = await api(default_timeout=10_000)
    worker = await _route(engine, "size", "size")
    await worker.send({"type": "registertrigger", "id": "t-size-head", "trigger_type": "http", "function_id": "size",
                       "config": {"api_path": "size", "http_method": "HEAD"}})
    await worker.sync()
    waiting = asyncio.ensure_future(client.head("/size", timeout=5))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        await out.send(json.dumps({"type": "set_headers", "headers": {"Content-Length": "100"}}))
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "size"})
    response = await waiting
    # the size of the body a GET would send; no body follows a HEAD answer
    assert response.status_code == 200 and response.headers["content-length"] == "100" and response.content == b""
