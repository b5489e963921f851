"""A streamed REST API response is framed as HTTP requires whatever the handler sends (found by an attack):

- to HEAD, and with status 204 or 304, a response has no body: what the handler streams is dropped. Before, it went out
  with no framing after the head, and a client reusing the connection took it for the answer to its next request (a
  handler streaming ``HTTP/1.1 200 OK…`` forged that answer, headers and all);
- a response cut short ends with a reset, not a close: an HTTP/1.0 client, whose body ends at the connection's end,
  took a cut one for whole (curl --http1.0 exited 0);
- header values with a control character (not only CR, LF, NUL) and a HEAD answer's malformed Content-Length are a 502
  (the client got nothing, with an ERROR traceback); a client gone before the head is written is one INFO line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from typing import Any

import pytest
import websockets

from iii_engine import Engine
from iii_engine.modules.http import api as api_module
from iii_engine.modules.http.channels import channel_url
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api_bounds import Start, api
from tests.polling import until

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")

FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Injected: yes\r\n\r\nEVIL!"


async def _routes(engine: Engine, *routes: tuple[str, str]) -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    for path, method in routes:
        function_id = f"{path}-{method.lower()}"
        await worker.register(function_id)
        await worker.send({"type": "registertrigger", "id": f"t-{function_id}", "trigger_type": "http",
                           "function_id": function_id, "config": {"api_path": path, "http_method": method}})
    await worker.sync()
    return worker


async def _stream(engine: Engine, worker: RawWorker, request: dict[str, Any], *frames: str | bytes,
                  outcome: dict[str, Any] | None = None) -> None:
    """Be the handler: send ``frames`` on the response channel (text frames are control frames), close, answer."""
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        for frame in frames:
            await out.send(frame)
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": request["function_id"], **(outcome or {})})


async def _answer_ok(worker: RawWorker) -> None:
    request = await worker.expect("invokefunction", function_id="ok-get")
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": "ok-get", "result": {"body": {"ok": 2}}})


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    got = b""
    async with asyncio.timeout(5):
        while piece := await reader.read(65536):
            got += piece
    return got


@pytest.mark.parametrize("method, control", [
    ("HEAD", []),
    ("HEAD", [json.dumps({"type": "set_headers", "headers": {"content-length": "10"}})]),
    ("GET", [json.dumps({"type": "set_status", "status_code": 204})]),
    ("GET", [json.dumps({"type": "set_status", "status_code": 304})]),
])
async def test_a_bodyless_response_drops_what_its_handler_streams(api: Start, method: str,
                                                                  control: list[str]) -> None:
    engine, module, _client = await api()
    worker = await _routes(engine, ("f", method), ("ok", "GET"))
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    # two requests on one connection: the second's answer must be its own
    writer.write(f"{method} /f HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                 .encode())
    request = await worker.expect("invokefunction", function_id=f"f-{method.lower()}")
    await _stream(engine, worker, request, *control, FORGED)
    await _answer_ok(worker)
    got = await _read_all(reader)
    writer.close()
    # before: b"...\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Injected: yes\r\n\r\nEVIL!HTTP/1.1 200 OK..."
    assert b"EVIL" not in got and b"X-Injected" not in got, got
    heads = got.split(b"HTTP/1.1 ")
    assert len(heads) == 3 and heads[2].startswith(b"200 OK") and got.endswith(b'{"ok":2}'), got
    await until(lambda: module.in_flight == 0, within=5)


async def test_a_cut_response_to_an_http_1_0_client_ends_with_a_reset(api: Start) -> None:
    engine, module, _client = await api()
    worker = await _routes(engine, ("cut", "GET"))
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"GET /cut HTTP/1.0\r\nHost: x\r\n\r\n")
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        await out.send(b"part of the body")
        assert (await reader.readuntil(b"part of the body")).startswith(b"HTTP/1.0 200")
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "cut-get", "error": {"code": "invocation_failed", "message": "disk"}})
        # before: the connection ended with a plain close, which ends an HTTP/1.0 body: a cut one read as whole
        with pytest.raises(ConnectionResetError):
            await _read_all(reader)
    writer.close()


@pytest.mark.parametrize("frames, outcome", [
    ([], {"result": {"status_code": 200, "headers": {"x-a": "a\x01b"}, "body": {}}}),
    ([json.dumps({"type": "set_headers", "headers": {"x-a": "a\x7fb"}}), b"body"], {}),
    ([json.dumps({"type": "set_headers", "headers": {"x-a": "a\x1bb"}})], {}),
])
async def test_a_header_value_with_a_control_character_is_a_502(api: Start, frames: list[Any],
                                                                 outcome: dict[str, Any]) -> None:
    engine, _module, client = await api()
    worker = await _routes(engine, ("h", "GET"))
    answer = asyncio.ensure_future(client.get("/h"))
    request = await worker.expect("invokefunction")
    if frames:
        await _stream(engine, worker, request, *frames)
    else:
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "h-get", **outcome})
    response = await answer
    # before: the client got nothing (a closed connection) or aiohttp's plain-text 500, with an ERROR traceback
    assert response.status_code == 502
    assert "control character" in response.json()["error"]


async def test_a_head_answer_with_a_malformed_content_length_is_a_502(api: Start) -> None:
    engine, _module, client = await api()
    worker = await _routes(engine, ("h", "HEAD"))
    answer = asyncio.ensure_future(client.head("/h"))
    request = await worker.expect("invokefunction")
    await _stream(engine, worker, request, json.dumps({"type": "set_headers", "headers": {"content-length": "abc"}}))
    assert (await answer).status_code == 502


async def test_a_client_gone_before_the_head_is_written_is_one_info_line(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, module, _client = await api()
    worker = await _routes(engine, ("feed", "GET"))
    client = socket.create_connection(("127.0.0.1", module.port))
    client.sendall(b"GET /feed HTTP/1.1\r\nHost: x\r\n\r\n")
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        await out.send(json.dumps({"type": "set_headers", "headers": {"content-type": "text/event-stream"}}))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset before the first chunk
        await until(lambda: all(c.transport is None or c.transport.is_closing()
                                for c in module._server.connections) if module._server else True)
        with contextlib.suppress(websockets.ConnectionClosed):  # told its reader left (4002) as the client went
            await out.send(b"data: first\n\n")
        await asyncio.wait_for(out.wait_closed(), 5)
    assert out.close_code == 4002
    await until(lambda: module.in_flight == 0, within=5)
    # before: "Error handling request" at ERROR with a traceback (response.prepare raised outside the stream's try)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_control_frame_too_long_for_any_head_is_refused_unparsed(api: Start) -> None:
    engine, _module, client = await api()
    worker = await _routes(engine, ("h", "GET"))
    answer = asyncio.ensure_future(client.get("/h"))
    request = await worker.expect("invokefunction")
    huge = json.dumps({"type": "set_headers", "headers": {"x-big": "v" * 500_000}})
    with contextlib.suppress(websockets.ConnectionClosed):  # our end closes with 1009 as it refuses
        await _stream(engine, worker, request, huge, b"body")
    response = await answer
    # before: parsed first (a 66 MB one held the loop 1.3 s), then refused as "response headers of 500005 bytes…"
    assert response.status_code == 502
    assert "a control frame of" in response.json()["error"], response.json()


async def test_a_body_whose_last_bytes_the_client_never_took_ends_with_a_reset(
        api: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    async def client_took_nothing(*args: Any) -> bool:
        return False  # _end_body gave up: the client read nothing of the last bytes for send_timeout

    monkeypatch.setattr(api_module, "_end_body", client_took_nothing)
    engine, module, _client = await api()
    worker = await _routes(engine, ("end", "GET"))
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"GET /end HTTP/1.0\r\nHost: x\r\n\r\n")
    request = await worker.expect("invokefunction")
    await _stream(engine, worker, request, b"the whole body")
    # before: a plain close, which ends an HTTP/1.0 body: what asyncio's buffer still held was lost unnoticed
    with pytest.raises(ConnectionResetError):
        await _read_all(reader)
    writer.close()


async def test_an_http_1_0_keep_alive_client_gets_a_streamed_body_ended_by_the_close(api: Start) -> None:
    engine, module, _client = await api()
    worker = await _routes(engine, ("feed", "GET"))
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"GET /feed HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    request = await worker.expect("invokefunction")
    await _stream(engine, worker, request, b"data")
    # before: the connection stayed open (the client waited header_timeout, 30 s, for the body's end)
    got = await _read_all(reader)
    assert got.startswith(b"HTTP/1.0 200") and got.endswith(b"\r\n\r\ndata"), got
    writer.close()


async def test_a_bodyless_answer_is_whole_once_its_head_is_out(api: Start) -> None:
    engine, module, _client = await api()
    worker = await _routes(engine, ("h", "HEAD"))
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None) as out:
        await out.send(b"dropped")  # the head goes out; the rest is dropped
        await until(lambda: module.in_flight == 1)
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "h-head", "error": {"code": "invocation_failed", "message": "later"}})
        await asyncio.wait_for(out.wait_closed(), 5)
    # before: the connection was reset, and a client that had not read the head yet lost it
    got = await _read_all(reader)
    assert got.startswith(b"HTTP/1.1 200"), got
    writer.close()
