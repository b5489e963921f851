"""How a streamed REST API response ends besides its handler closing its writer: a client that stops reading is cut
after ``send_timeout`` whatever the frame size; a function that fails after its response started has the response
cut (the client sees an incomplete body) and a result it returns then gives its writer a short grace; a client that
leaves frees its request slot at once and its handler's writer hears 4002, and that is one INFO line in the log."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine
from iii_engine.modules.http import api as api_module
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api_bounds import Start, _route, api
from tests.polling import until

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")

FRAME = b"x" * (960 * 1024)  # the frame size our SDK's writers use when the engine invites it
MAX_FRAMES = 256  # 240 MiB: far more than every buffer on the way holds


@asynccontextmanager
async def _client_that_never_reads(module: RestApiModule, path: str) -> AsyncIterator[socket.socket]:
    """A client that sends ``GET path`` and then reads nothing (a small receive buffer: it fills at once)."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(stalled, ("127.0.0.1", module.port))
        await loop.sock_sendall(stalled, f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield stalled
    finally:
        stalled.close()


async def test_large_frames_to_a_client_that_never_reads_are_cut_after_send_timeout(api: Start) -> None:
    engine, module, _client = await api(send_timeout=500, concurrency_request_limit=1, slot_timeout=200)
    worker = await _route(engine, "download", "download")
    async with _client_that_never_reads(module, "download"):
        request = await worker.expect("invokefunction")
        written = 0
        async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None,
                                      max_size=None) as out:
            with pytest.raises(ConnectionClosed):
                for _ in range(MAX_FRAMES):
                    # before: after ~40 frames the writer blocked here for good (TimeoutError): a frame written
                    # into the connection's empty buffer waited for the client with no timer
                    await asyncio.wait_for(out.send(FRAME), 5)
                    written += 1
        await until(lambda: module.in_flight == 0, within=5)
        assert written < MAX_FRAMES
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": "download"})


async def _writer(engine: Engine, request: dict[str, Any]) -> ClientConnection:
    """The handler's end of the request's response channel."""
    return await websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None)


async def _answer(worker: RawWorker, request: dict[str, Any], **outcome: Any) -> None:
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": request["function_id"], **outcome})


async def _get(module: RestApiModule, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return reader, writer


async def _rest_of(reader: asyncio.StreamReader) -> bytes:
    """What the connection sends until the engine closes it (a reset ends it too)."""
    rest = b""
    async with asyncio.timeout(5):  # before: nothing ended these responses (the attack's client waited 50 s)
        try:
            while piece := await reader.read(65536):
                rest += piece
        except ConnectionResetError:
            pass
    return rest


async def test_a_function_that_fails_after_its_stream_started_has_the_response_cut(api: Start) -> None:
    engine, module, _client = await api(concurrency_request_limit=1, slot_timeout=200)
    worker = await _route(engine, "fails", "fails")
    reader, writer = await _get(module, "fails")
    request = await worker.expect("invokefunction")
    async with await _writer(engine, request) as out:
        await out.send(b"part of the body")
        assert (await reader.readuntil(b"part of the body")).startswith(b"HTTP/1.1 200")
        await _answer(worker, request, error={"code": "invocation_failed", "message": "disk failed"})
        rest = await _rest_of(reader)
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.close_code == 4002  # the writer hears its reader left
    assert b"0\r\n\r\n" not in rest  # cut: never a complete-looking body
    await until(lambda: module.in_flight == 0, within=5)  # the slot is free again
    writer.close()


async def test_a_result_after_the_stream_started_cuts_it_once_the_writer_stops(
        api: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "RESULT_GRACE_S", 0.2, raising=False)
    engine, module, _client = await api()
    worker = await _route(engine, "result", "result")
    reader, writer = await _get(module, "result")
    request = await worker.expect("invokefunction")
    async with await _writer(engine, request) as out:
        await out.send(b"first")
        await reader.readuntil(b"first")
        await _answer(worker, request, result={"status_code": 500, "body": {"error": "failed"}})
        assert b"0\r\n\r\n" not in await _rest_of(reader)
        await asyncio.wait_for(out.wait_closed(), 5)
    await until(lambda: module.in_flight == 0, within=5)
    writer.close()


async def test_a_null_result_leaves_the_stream_to_its_writer(api: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "RESULT_GRACE_S", 0.05, raising=False)
    engine, module, _client = await api()
    worker = await _route(engine, "null", "null")
    reader, writer = await _get(module, "null")
    request = await worker.expect("invokefunction")
    async with await _writer(engine, request) as out:
        await out.send(b"first ")
        await reader.readuntil(b"first ")
        await _answer(worker, request)  # a streaming handler's usual return: nothing to send
        await worker.sync()
        await asyncio.sleep(0.2)  # longer than any grace: the stream is its writer's until it closes
        await out.send(b"second")
    assert (await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)).endswith(b"second\r\n0\r\n\r\n")
    writer.close()


async def test_a_client_that_leaves_an_idle_stream_frees_its_slot_at_once(api: Start) -> None:
    engine, module, _client = await api(concurrency_request_limit=1, slot_timeout=200)
    worker = await _route(engine, "feed", "feed")
    reader, writer = await _get(module, "feed")
    request = await worker.expect("invokefunction")
    async with await _writer(engine, request) as out:
        await out.send(b"event: one\n\n")  # then the feed is quiet
        await reader.readuntil(b"event: one")
        writer.close()
        # before: the writer heard nothing (still open after 15 s) and the slot stayed taken until its next write
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.close_code == 4002
    await until(lambda: module.in_flight == 0, within=5)
    await _answer(worker, request)


async def test_a_client_gone_mid_download_is_one_info_line(api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, module, _client = await api()
    worker = await _route(engine, "download", "download")
    async with _client_that_never_reads(module, "download") as stalled:
        request = await worker.expect("invokefunction")
        async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None,
                                      max_size=None) as out:
            with pytest.raises(TimeoutError):
                for _ in range(MAX_FRAMES):
                    await asyncio.wait_for(out.send(FRAME), 0.5)  # until the engine's write waits for the client
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stalled.close()  # a reset, with the engine's write waiting for the client
            await asyncio.wait_for(out.wait_closed(), 5)
    await until(lambda: module.in_flight == 0, within=5)
    await _answer(worker, request)
    await worker.sync()
    # before: "Error handling request" at ERROR with a traceback of some 20 lines
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    gone = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO


async def test_a_client_that_leaves_before_the_first_chunk_frees_its_slot_at_once(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, module, _client = await api(concurrency_request_limit=1, slot_timeout=200, default_timeout=20_000)
    worker = await _route(engine, "feed", "feed")
    _reader, writer = await _get(module, "feed")
    request = await worker.expect("invokefunction")
    assert module._server is not None
    lost = module._server.on_lost
    async with await _writer(engine, request) as out:  # attached: an SSE feed waiting for its first event
        await until(lambda: bool(lost), within=5)  # the request waits for the first chunk
        writer.close()
        # before: the writer heard nothing and the slot stayed taken until the first chunk or default_timeout (20 s)
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.close_code == 4002
    await until(lambda: module.in_flight == 0, within=5)
    assert module.gone == 1 and not lost
    await _answer(worker, request)
    await worker.sync()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in caplog.records if "client gone before the streamed" in r.getMessage()] == [logging.INFO]


async def test_a_client_gone_before_its_handler_attached_is_not_waited_for(api: Start) -> None:
    engine, module, _client = await api(concurrency_request_limit=1, slot_timeout=200, default_timeout=20_000)
    worker = await _route(engine, "feed", "feed")
    _reader, writer = await _get(module, "feed")
    request = await worker.expect("invokefunction")
    writer.close()
    assert module._server is not None
    server = module._server
    await until(lambda: server.open_connections == 0, within=5)
    async with await _writer(engine, request) as out:  # attaches after its client left
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.close_code == 4002
    await until(lambda: module.in_flight == 0, within=5)
    assert module.gone == 1
    await _answer(worker, request)


async def test_an_http10_client_that_leaves_before_the_first_chunk_has_its_handlers_writer_told(api: Start) -> None:
    # HTTP/1.0 (nginx's default to an upstream) gets no probe: its end of input may be its leaving, so the handler's
    # writer is told its reader left (a stream ends there) and the request ends with the function (its slot with it);
    # before, nothing told the writer and the slot stayed taken until default_timeout (20 s here)
    engine, module, _client = await api(concurrency_request_limit=1, slot_timeout=200, default_timeout=20_000)
    worker, _reader, writer, request = await _http10_feed(engine, module)
    async with await _writer(engine, request) as out:
        await _waiting_for_the_first_chunk(module)
        writer.close()
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.close_code == 4002
    await _answer(worker, request)  # the handler, told, ends
    await until(lambda: module.in_flight == 0, within=5)
    assert module.gone == 1


async def test_an_http10_client_that_half_closes_still_gets_the_json_answer(api: Start) -> None:
    # It only ended its side and still reads: a result the function returns is answered (re-attack on 3800f95, which
    # answered 499 to such a client once its handler had touched its response writer)
    engine, module, _client = await api(default_timeout=20_000)
    worker, reader, writer, request = await _http10_feed(engine, module)
    async with await _writer(engine, request):
        await _waiting_for_the_first_chunk(module)
        writer.write_eof()
        await _answer(worker, request, result={"status_code": 200, "body": {"ok": True}})
        answer = await _rest_of(reader)
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b'{"ok":true}'), answer[:200]
    writer.close()


async def _http10_feed(engine: Engine, module: RestApiModule) -> tuple[RawWorker, asyncio.StreamReader,
                                                                        asyncio.StreamWriter, dict[str, Any]]:
    """A route ``feed`` served by a raw worker, and an HTTP/1.0 ``GET /feed`` its worker was asked to answer."""
    worker = await _route(engine, "feed", "feed")
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"GET /feed HTTP/1.0\r\nHost: x\r\n\r\n")
    return worker, reader, writer, await worker.expect("invokefunction")


async def _waiting_for_the_first_chunk(module: RestApiModule) -> None:
    """Until the request waits for its attached handler's first chunk (its client's leaving is watched)."""
    assert module._server is not None
    lost = module._server.on_lost
    await until(lambda: bool(lost), within=5)
