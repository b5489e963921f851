"""The ends of a streamed REST API response: a client that stops reading right at the end of a download is cut after
``send_timeout`` (its connection no longer stays open for good), a function that returned null and whose writer
stays silent past ``default_timeout`` has its response cut, and a client that half-closes its connection after a
complete request is answered."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iii_engine.modules.http.api import RestApiModule
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api_bounds import Start, _route, api
from tests.integration.modules.test_http_stream_ends import (
    _answer,
    _client_that_never_reads,
    _get,
    _rest_of,
    _writer,
)
from tests.polling import until

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")

CHUNK = b"x" * (32 * 1024)  # under the connection's high-water mark: each is written whole, never waited for


def _streamed(module: RestApiModule) -> asyncio.Transport:
    """The client connection of the one streamed response in progress."""
    (request,) = module._streaming.values()
    assert request.transport is not None
    return request.transport


async def test_a_client_that_stops_reading_at_the_end_of_a_download_is_cut(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, module, _client = await api(send_timeout=500)
    worker = await _route(engine, "download", "download")
    async with _client_that_never_reads(module, "download"):
        request = await worker.expect("invokefunction")
        async with await _writer(engine, request) as out:
            await out.send(CHUNK)
            await until(lambda: bool(module._streaming))
            transport = _streamed(module)
            (http_request,) = module._streaming.values()
            body = len(CHUNK)

            def written() -> bool:  # the engine handed all the chunks sent so far to the connection
                return http_request.writer.output_size >= body

            # chunks until the kernel's buffers are full and one stays in the connection's buffer
            while not transport.get_write_buffer_size():
                await out.send(CHUNK)
                body += len(CHUNK)
                await until(written)
        # the writer closed: the body ends with its last chunk still unsent
        # before: the connection stayed open for good (aiohttp's close waits for those bytes): 1 after 12 s
        await until(lambda: module.connections == 0, within=5)
        assert module.in_flight == 0
    await _answer(worker, request)
    lines = [r for r in caplog.records if "last bytes" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, [r.getMessage() for r in caplog.records]


async def test_a_null_result_with_a_silent_writer_is_cut_after_default_timeout(api: Start) -> None:
    engine, module, _client = await api(default_timeout=300, concurrency_request_limit=1, slot_timeout=200)
    worker = await _route(engine, "forgets", "forgets")
    reader, writer = await _get(module, "forgets")
    request = await worker.expect("invokefunction")
    async with await _writer(engine, request) as out:  # kept open, as a writer object nothing collects
        await out.send(b"part")
        await reader.readuntil(b"part")
        await _answer(worker, request)  # null, the writer never closed
        # before: the response stayed open (the attack's client waited 45 s) and so did its slot
        rest = await _rest_of(reader)
        await asyncio.wait_for(out.wait_closed(), 5)
        assert out.close_code == 4002  # the writer hears its reader left
    assert b"0\r\n\r\n" not in rest  # cut: never a complete-looking body
    await until(lambda: module.in_flight == 0, within=5)
    writer.close()


async def test_a_null_result_with_a_writer_that_keeps_sending_is_not_cut(api: Start) -> None:
    engine, module, _client = await api(default_timeout=300)
    worker = await _route(engine, "feed", "feed")
    reader, writer = await _get(module, "feed")
    request = await worker.expect("invokefunction")
    async with await _writer(engine, request) as out:
        await out.send(b"event 0;")
        await reader.readuntil(b"event 0;")
        await _answer(worker, request)
        for n in range(1, 8):  # 1.4 s in all, over four times default_timeout, never silent for half of it
            await asyncio.sleep(0.2)
            await out.send(b"event %d;" % n)
            await asyncio.wait_for(reader.readuntil(b"event %d;" % n), 5)
    assert (await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)).endswith(b"0\r\n\r\n")
    writer.close()


async def _half_closed(module: RestApiModule, request: bytes) -> bytes:
    """Send ``request``, half-close the connection and read until the engine closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(request)
    await writer.drain()
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_complete_request_then_a_half_close_is_answered(api: Start) -> None:
    engine, module, _client = await api()
    worker = await RawWorker.connect(engine.url)
    await worker.register("hello")
    await worker.send({"type": "registertrigger", "id": "t-hello", "trigger_type": "http", "function_id": "hello",
                       "config": {"api_path": "hello", "http_method": "POST"}})
    await worker.sync()
    answering = asyncio.ensure_future(_half_closed(module, b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2"
                                                           b"\r\n\r\n{}GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"))
    request = await worker.expect("invokefunction")
    await _answer(worker, request, result={"status_code": 201, "body": {"ok": True}})
    answer = await answering
    # before: b"" at once, the handler never invoked ("client gone before a slot freed; not invoked")
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 "), answer[:100]
    assert b'{"ok":true}' in answer and b"HTTP/1.1 404 " in answer  # the pipelined request too, then closed
    ten = await _half_closed(module, b"GET /nowhere HTTP/1.0\r\n\r\n")
    assert ten.startswith(b"HTTP/1.0 404 ") or ten.startswith(b"HTTP/1.1 404 "), ten[:100]  # no 1xx to HTTP/1.0


async def test_an_http10_client_gone_while_its_request_waits_for_a_slot_is_not_invoked(
        api: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP/1.0 request gets no probe (no 1xx may go to it), so its client closing its socket looks like a
    half-close. Before: such a request was invoked once a slot freed (3 of 3), for a client long gone."""
    engine, module, client = await api(concurrency_request_limit=1)
    worker = await _route(engine, "hold", "hold")
    first = asyncio.ensure_future(client.get("/hold"))
    held = await worker.expect("invokefunction")
    waiting: asyncio.Queue[Any] = asyncio.Queue()
    take_slot, receive = module._take_slot, module._receive

    async def watched_take_slot() -> None:
        await waiting.put(None)
        await take_slot()

    async def watched_receive(request: Any, claim: Any) -> bytearray:
        requests.append(request)
        return await receive(request, claim)

    requests: list[Any] = []
    monkeypatch.setattr(module, "_take_slot", watched_take_slot)
    monkeypatch.setattr(module, "_receive", watched_receive)
    _reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"GET /hold HTTP/1.0\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(waiting.get(), 5)  # the request waits for the only slot
    writer.close()  # ... and its client leaves
    await writer.wait_closed()
    await until(lambda: getattr(requests[-1].protocol, "input_ended", True))  # (no such flag before the fix)
    await _answer(worker, held, result={"body": "ok"})
    assert (await first).status_code == 200
    await worker.nothing_for(0.3)  # proves an absence: the departed client's request never reaches the handler
    assert module.abandoned == 1 and module.in_flight == 0
