"""An endpoint of an HTTP-invoked function that misbehaves costs the engine little and leaves a trace: endless
interim (1xx) answers and bodies of 1-byte chunks fail fast, a void call's failure is counted and logged, an error
object cannot write lines into the engine's log, errors say when the answer is not HTTP and quote a long URL
clipped; an idempotent request whose reused connection dropped before its answer is sent again, as HTTP allows
(a stale kept-alive connection is common), under the same invocation id."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError
from iii_engine.modules.http.endpoint_client import MAX_INTERIM_RESPONSES
from iii_engine.modules.http.functions import HttpFunctionsModule
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_functions import LOCAL_RULES
from tests.polling import until

pytestmark = pytest.mark.our_engine("calls our engine's HTTP functions module directly")

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"ok":1}'
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
Behaviour = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Server:
    """Raw HTTP/1.1 on kept-alive connections: each path's behaviour writes the answer (given the number of the
    request on its connection, from 1); ``hits`` counts requests by path, ``ids`` their invocation ids."""

    base: str = ""
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while line := await reader.readline():
                path = line.split()[1].decode().strip("/").split("/")[0]
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    if name.lower() == "x-iii-invocation-id":
                        self.ids.append(value.strip())
                await reader.readexactly(length)
                served += 1
                self.hits[path] = self.hits.get(path, 0) + 1
                await self.behaviours[path](writer, served)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _answer(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _endless(writer: asyncio.StreamWriter, head: bytes, piece: bytes) -> None:
    """``head``, then ``piece`` for ever (until the client closes)."""
    writer.write(head)
    while True:
        writer.write(piece)
        await writer.drain()


def _error_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(body) + body


BEHAVIOURS: dict[str, Behaviour] = {
    "ok": lambda w, _: _answer(w, OK),
    "hints-forever": lambda w, _: _endless(w, b"", EARLY_HINTS * 200),
    "hints-then-ok": lambda w, _: _answer(w, EARLY_HINTS * MAX_INTERIM_RESPONSES + OK),
    "tiny-chunks": lambda w, _: _endless(w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                         b"1\r\n \r\n" * 20_000),
    # 2,000 chunks of 100 bytes: many pieces, none tiny
    "many-chunks": lambda w, _: _answer(w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        + b"1\r\n[\r\n" + (b"64\r\n" + b" " * 100 + b"\r\n") * 2_000
                                        + b"1\r\n]\r\n0\r\n\r\n"),
    # streamed JSON, one small element per chunk (as json.JSONEncoder().iterencode behind a streaming response)
    "streamed": lambda w, _: _answer(w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     + b"1\r\n[\r\n" + b"2\r\n1,\r\n" * 80_000 + b"1\r\n1\r\n1\r\n]\r\n0\r\n\r\n"),
    "odd-reason": lambda w, _: _answer(w, b"HTTP/1.1 599 \x1b[2JFAKE\r\nContent-Length: 2\r\n\r\n{}"),
    "fail": lambda w, _: _answer(w, _error_answer(b"{}")),
    "forged": lambda w, _: _answer(w, _error_answer(
        b'{"error": {"code": "E\\r\\nCRITICAL forged", "message": "m\\r\\nCRITICAL forged too\\u001b[31m\\u2028"}}')),
    "token": lambda w, _: _answer(w, _error_answer(b'{"error": {"code": "order.missing-1", "message": "no\\tsuch"}}')),
    "garbage": lambda w, _: _answer(w, b"garbage garbage\r\n\r\n"),
    # answers the first request on a connection; closes the connection on the next one, unanswered
    "crash-second": lambda w, n: _answer(w, OK) if n == 1 else _close(w),
}


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    raise ConnectionResetError  # ends the connection's loop


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server(behaviours=BEHAVIOURS)
    tcp = await asyncio.start_server(served.serve, "127.0.0.1", 0, limit=1 << 20)  # (a 100 KB URL)
    served.base = f"http://127.0.0.1:{tcp.sockets[0].getsockname()[1]}"
    yield served
    tcp.close()
    await tcp.wait_closed()


async def _start(**config: Any) -> Engine:
    spec = ModuleSpec("modules::http_functions::HttpFunctionsModule", {"security": LOCAL_RULES})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec], **config))
    await engine.start()
    return engine


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    running = await _start()
    yield running
    await running.stop()


def _module(engine: Engine) -> HttpFunctionsModule:
    found = engine.module("http_functions")
    assert isinstance(found, HttpFunctionsModule)
    return found


async def _failure(module: HttpFunctionsModule, url: str, method: str = "POST",
                   timeout_ms: int = 10_000) -> EngineError:
    await module.register_external("hook", {"url": url, "method": method, "timeout_ms": timeout_ms}, None)
    with pytest.raises(EngineError) as caught:
        await module.call("hook", {"x": 1})
    return caught.value


async def test_endless_interim_answers_fail_the_call_at_once(engine: Engine, server: Server) -> None:
    module = _module(engine)
    started = time.monotonic()
    error = await _failure(module, f"{server.base}/hints-forever", timeout_ms=10_000)
    # before: read until the call's timeout_ms ("timed out after 10000 ms"), the engine's loop busy all along
    assert error.code == "http_response_failed", error
    assert f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses, the latest 103" in error.message
    assert time.monotonic() - started < 5
    await module.register_external("hinted", {"url": f"{server.base}/hints-then-ok"}, None)
    assert await module.call("hinted", {}) == {"ok": 1}  # as many as the bound: read past
    assert await module.call("hinted", {}) == {"ok": 1}  # on the same connection, its read is aiohttp's again


async def test_a_body_of_tiny_chunks_fails_after_a_bounded_number_of_pieces(server: Server) -> None:
    engine = await _start(max_message_size=1024 * 1024)
    try:
        error = await _failure(_module(engine), f"{server.base}/tiny-chunks", timeout_ms=25_000)
        # before: read to the 1 MiB bound, 1 byte per chunk (result_not_sent)
        assert error.code == "http_response_failed", error
        assert "its body came in pieces too small to read" in error.message, error.message
        module = _module(engine)
        await module.register_external("chunky", {"url": f"{server.base}/many-chunks"}, None)
        assert await module.call("chunky", {}) == []
    finally:
        await engine.stop()


async def test_streamed_json_of_one_small_element_per_chunk_is_read(engine: Engine, server: Server) -> None:
    # a count of pieces (65,536 at least) refused this 80,001-chunk, 400 KB body
    module = _module(engine)
    await module.register_external("streamed", {"url": f"{server.base}/streamed"}, None)
    assert await module.call("streamed", {}) == [1] * 80_001


async def test_a_failed_void_call_is_counted_and_logged(engine: Engine, server: Server,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine.modules.http.functions")
    module = _module(engine)
    worker = await RawWorker.connect(engine.url)
    await worker.register("fails", invocation={"url": f"{server.base}/fail"})
    await worker.register("works", invocation={"url": f"{server.base}/ok"})
    await worker.sync()
    for function_id in ("works", "fails"):
        await worker.send({"type": "invokefunction", "function_id": function_id, "data": {}})  # void
    await until(lambda: server.hits.get("fail") == 1 and not module.stats()["in_flight"])
    # answered calls and the engine's own (a queue's, a trigger's) have their error: not counted
    assert "error" in await worker.call("fails", {})
    with pytest.raises(EngineError):
        await engine.invocations.call("fails", {})
    await until(lambda: server.hits.get("fail") == 3 and not module.stats()["in_flight"])
    # before: no count and no log line; the caller asked for no answer, so nobody heard of it
    assert module.stats()["void_failed"] == 1
    lines = [record.getMessage() for record in caplog.records if "void call" in record.getMessage()]
    assert lines == ["HTTP functions: 1 void call(s) failed since the last warning (1 in all; their callers asked for "
                     "no answer), latest fails (http_error): HTTP 500 Internal Server Error"]
    await worker.close()


async def test_an_error_object_cannot_write_lines_into_the_log(engine: Engine, server: Server) -> None:
    error = await _failure(_module(engine), f"{server.base}/forged")
    # before: code 'E\r\nCRITICAL forged' and the message with its CR LF and escape passed on as they were
    assert error.code == "http_error"
    assert error.message == ("m\\r\\nCRITICAL forged too\\x1b[31m\\u2028 (the endpoint's error code "
                             "'E\\r\\nCRITICAL forged' is not a token: letters, digits and !#$%&'*+-.^_`|~ only)")
    error = await _failure(_module(engine), f"{server.base}/token")
    assert (error.code, error.message) == ("order.missing-1", "no\\tsuch")
    error = await _failure(_module(engine), f"{server.base}/odd-reason")  # a status with no standard phrase
    assert error.code == "http_error" and "HTTP 599 \\x1b[2JFAKE" in error.message, error.message


async def test_an_answer_that_is_not_http_says_so_and_a_long_url_is_clipped(engine: Engine, server: Server) -> None:
    error = await _failure(_module(engine), f"{server.base}/garbage/{'a' * 100_000}")
    # before: "… failed: 400, message='Bad status line …'" (as if the endpoint answered 400), and the whole URL:
    # 100,174 characters
    assert error.code == "http_request_failed"
    assert "failed: the endpoint's answer is not valid HTTP: Bad status line" in error.message, error.message
    assert "400, message" not in error.message and len(error.message) < 1000, error.message
    assert "a…(1000" in error.message


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
async def test_an_idempotent_request_is_sent_again_when_its_reused_connection_drops(engine: Engine, server: Server,
                                                                                   method: str) -> None:
    """As HTTP allows (RFC 9112 9.3.1), and needed: a kept-alive connection the server closed while idle is often
    taken before its close is read (refusing those failed 9-12 % of GETs spaced about a server's idle timeout).
    The endpoint sees the same invocation id twice, by which it can tell."""
    module = _module(engine)
    await module.register_external("hook", {"url": f"{server.base}/crash-second", "method": method}, None)
    assert await module.call("hook", {}) == {"ok": 1}  # its connection is kept alive
    if method == "POST":
        with pytest.raises(EngineError) as caught:
            await module.call("hook", {})
        assert caught.value.code == "http_request_failed"
        assert server.hits["crash-second"] == 2 and len(set(server.ids)) == 2, server.ids
    else:
        assert await module.call("hook", {}) == {"ok": 1}  # sent again on a new connection
        assert server.hits["crash-second"] == 3 and len(set(server.ids)) == 2 and server.ids[1] == server.ids[2]
