"""A whole (non-streamed) REST API response to a client that never reads is held to ``send_timeout``, as a streamed
one is: the connection is cut and stops counting against ``max_connections``.

Before: aiohttp wrote the returned response and waited with no bound for the client to take what did not fit the
connection's buffer; a 3 MB JSON answer's connection was still open 8 s past a 500 ms ``send_timeout`` (and a small
answer's last bytes kept it the same way, since closing waits for them).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from tests.integration.modules.test_http_api_bounds import Start, _route, api
from tests.integration.modules.test_http_stream_ends import _answer, _client_that_never_reads, _get
from tests.polling import until

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = [pytest.mark.our_engine("configures the REST API module of our engine"), pytest.mark.timeout(30)]


async def test_a_large_answer_the_client_never_reads_is_cut_after_send_timeout(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, module, _client = await api(send_timeout=500)
    worker = await _route(engine, "big", "big")
    async with _client_that_never_reads(module, "big"):
        request = await worker.expect("invokefunction")
        await _answer(worker, request, result={"status_code": 200, "body": {"x": "y" * 3_000_000}})
        await until(lambda: module.in_flight == 0, within=5)
        await until(lambda: module.connections == 0, within=5)  # before: 1 still after 8 s
    _one_cut(caplog)


async def test_small_answers_piling_up_unread_are_cut_after_send_timeout(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    # Pipelined requests whose answers (each well under the buffer's room) the client never reads: once the kernel's
    # buffers are full they stay in the connection's buffer, where nothing took them before.
    caplog.set_level(logging.INFO)
    engine, module, _client = await api(send_timeout=500)
    worker = await _route(engine, "small", "small")
    async with _client_that_never_reads(module, "small") as stalled:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(stalled, b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" * 399)  # 400 in all
        answered = 0
        while module.connections and answered < 400:
            try:
                request = await worker.expect("invokefunction", wait=2)
            except TimeoutError:
                break  # the connection is waiting for the client (and is cut within send_timeout)
            await _answer(worker, request, result={"status_code": 200, "body": {"x": "y" * 30_000}})
            answered += 1
        assert answered < 400, "the kernel took every answer: nothing was left to wait for"
        await until(lambda: module.connections == 0, within=5)
    _one_cut(caplog)


def _one_cut(caplog: pytest.LogCaptureFixture) -> None:
    lines = [r.getMessage() for r in caplog.records if "send_timeout" in r.getMessage()]
    assert len(lines) == 1 and "connection cut" in lines[0], lines


async def test_a_client_that_reads_gets_the_whole_answer(api: Start) -> None:
    engine, module, _client = await api(send_timeout=500)
    worker = await _route(engine, "big", "big")
    for size in (10, 40_000, 3_000_000):
        reader, writer = await _get(module, "big")
        request = await worker.expect("invokefunction")
        await _answer(worker, request, result={"status_code": 200, "body": {"x": "y" * size}})
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        (length,) = (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length"))
        body = await reader.readexactly(length)
        assert body == b'{"x":"' + b"y" * size + b'"}'
        writer.close()
        await writer.wait_closed()
    await until(lambda: module.connections == 0, within=5)


async def test_a_slow_reader_is_not_cut(api: Start) -> None:
    # It takes a bit every 50 ms, far under send_timeout: the watch sees it take bytes and leaves it.
    engine, module, _client = await api(send_timeout=300)
    worker = await _route(engine, "big", "big")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", module.port))
        await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        request = await worker.expect("invokefunction")
        assert module._server is not None
        (handler,) = module._server.handlers
        assert handler.transport is not None  # small kernel buffers: the answer waits in the connection's own
        handler.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await _answer(worker, request, result={"status_code": 200, "body": {"x": "y" * 100_000}})
        got, watched = b"", False
        while not got.endswith(b'"}'):
            piece = await loop.sock_recv(sock, 32 * 1024)
            assert piece, f"cut after {len(got)} bytes"
            got += piece
            watched = watched or module._server.handlers.get(handler, -1) >= 0
            await asyncio.sleep(0.05)  # the slow reader itself, not a synchronisation
        assert got.split(b"\r\n\r\n", 1)[1] == b'{"x":"' + b"y" * 100_000 + b'"}'
        assert watched, "the watch never measured this connection: the test shows nothing"
        assert module.connections == 1
    finally:
        sock.close()
