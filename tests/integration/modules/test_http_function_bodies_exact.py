"""An HTTP-invoked function's result is the whole answer to its own request, or the call fails saying why: a gzip
body cut off before its end was taken for whole (aiohttp's decoding checks only deflate's end), and bytes a server
wrote on an idle kept-alive connection were read by the next request as its answer, whichever function made it."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import threading
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine.modules.base import EngineError
from iii_engine.modules.http.functions import HttpFunctionsModule
from tests.integration.modules.test_ah_http_functions_answers import module
from tests.polling import until

__all__ = ["module"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("calls our engine's HTTP functions module directly")

PADDED = b'{"ok": "cut"}' + b" " * 20_000
LONG_NUMBER = b"7" * 4000
CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"


def _sync_flushed(data: bytes, wbits: int) -> bytes:
    """``data`` compressed and flushed to a byte boundary, with no last block and no trailer: a stream cut off
    whose bytes so far decode to all of ``data``."""
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)


def _answer(body: bytes, encoding: str | None = None, chunked: bool = False) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if encoding:
        head += f"Content-Encoding: {encoding}\r\n".encode()
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


ANSWERS = {
    "gzip-cut": _answer(_sync_flushed(PADDED, 31), "gzip"),
    "gzip-cut-chunked": _answer(_sync_flushed(PADDED, 31), "gzip", chunked=True),
    "deflate-cut": _answer(_sync_flushed(PADDED, 15), "deflate"),
    "gzip-no-trailer": _answer(gzip.compress(b'{"whole": 1}')[:-8], "gzip"),
    "gzip": _answer(gzip.compress(b'{"whole": 1}'), "gzip"),
    "gzip-two-members": _answer(gzip.compress(b'{"whole":') + gzip.compress(b" 2}"), "gzip"),
    # 2,000 members with content: what a server flushing each write as a member sends
    "gzip-many-members": _answer(gzip.compress(b'{"whole": 6') + b"".join(gzip.compress(b" ") for _ in range(2000))
                                 + gzip.compress(b"}"), "gzip"),
    "deflate-zlib": _answer(zlib.compress(b'{"whole": 3}'), "deflate"),
    "deflate-raw": _answer(zlib.compress(b'{"whole": 4}', wbits=-15), "deflate"),
    "deflate-trailing": _answer(zlib.compress(b'{"whole": 5}') + b"junk", "deflate"),
    "gzip-garbage": _answer(b"this is not gzip at all", "gzip"),
    "brotli": _answer(b"\x0b\x02\x80{}\x03", "br"),
    "deep": _answer(b"[" * 200 + b"]" * 200),
    "gzip-endless-members": _answer(gzip.compress(b"") * 2000, "gzip"),
    "deflate-endless-blocks": _answer(b"\x78\x9c" + b"\x00\x00\x00\xff\xff" * 1_000_000, "deflate"),
    "two-encodings": b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: 10\r\n\r\n" + b'{"raw": 1}',
    "gzip-nothing-close": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n",
    "gzip-nothing-length": _answer(b"", "gzip"),
    "a": _answer(b'{"for": "a"}'),
    "b": _answer(b'{"for": "b"}'),
}


class Server:
    """Answers each request by its path on kept-alive connections; ``poison`` then writes an answer to no request on
    the connection that served ``/a``."""

    def __init__(self) -> None:
        self.base = ""
        self.requests: list[dict[str, Any]] = []
        self.idle_writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                path = line.split()[1].decode().strip("/")
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append({"path": path, "headers": headers, "body": body})
                if path == "close-whole":
                    writer.write(CLOSE_DELIMITED + LONG_NUMBER)
                    break
                writer.write(ANSWERS[path])
                await writer.drain()
                if path == "a":
                    self.idle_writer = writer
                if path.endswith("-close"):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def poison(self) -> None:
        assert self.idle_writer is not None
        self.idle_writer.write(_answer(b'{"poisoned": true}'))
        await self.idle_writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server()
    tcp = await asyncio.start_server(served.serve, "127.0.0.1", 0)
    served.base = f"http://127.0.0.1:{tcp.sockets[0].getsockname()[1]}"
    yield served
    tcp.close()
    await tcp.wait_closed()


async def _call(module: HttpFunctionsModule, url: str, function_id: str = "hook") -> Any:
    await module.register_external(function_id, {"url": url, "timeout_ms": 5000}, None)
    return await module.call(function_id, {"x": 1})


@pytest.mark.parametrize("path", ["gzip-cut", "gzip-cut-chunked", "deflate-cut", "gzip-no-trailer"])
async def test_a_compressed_body_cut_before_its_end_fails_the_call(module: HttpFunctionsModule, server: Server,
                                                                    path: str) -> None:
    with pytest.raises(EngineError) as caught:
        await _call(module, f"{server.base}/{path}")
    # before: gzip cut off was a result ({'ok': 'cut'}); deflate cut off was "http_request_failed … message: deflate"
    assert caught.value.code == "http_response_failed", caught.value
    assert "was not read whole" in caught.value.message and "ends before its end (cut off)" in caught.value.message


@pytest.mark.parametrize("path, result", [("gzip", {"whole": 1}), ("gzip-two-members", {"whole": 2}),
                                          ("deflate-zlib", {"whole": 3}), ("deflate-raw", {"whole": 4}),
                                          ("gzip-many-members", {"whole": 6})])
async def test_whole_compressed_bodies_are_read(module: HttpFunctionsModule, server: Server, path: str,
                                                result: Any) -> None:
    assert await _call(module, f"{server.base}/{path}") == result
    assert server.requests[-1]["headers"]["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("path, says", [
    # before: each decoded to nothing, read until the call's timeout at a core's full speed
    ("gzip-endless-members", "more than 1024 empty gzip members"),
    # before: "identity" alone was read: gzip bytes went through as they were, plain ones as a result
    ("two-encodings", "Content-Encoding 'identity, gzip' is not one the engine decodes"),
    # before: a result (None) from a connection that ended before any of its stream came
    ("gzip-nothing-close", "its connection ended before any of its gzip stream came"),
    ("deflate-trailing", "bytes after the end of its deflate stream"),
    ("gzip-garbage", "it is not valid gzip data"),
    ("brotli", "Content-Encoding 'br' is not one the engine decodes (gzip, deflate)"),
])
async def test_a_body_that_is_not_its_encoding_names_why(module: HttpFunctionsModule, server: Server, path: str,
                                                         says: str) -> None:
    with pytest.raises(EngineError) as caught:
        await _call(module, f"{server.base}/{path}")
    assert caught.value.code == "http_response_failed" and says in caught.value.message, caught.value


async def test_json_the_engine_refuses_names_its_reason(module: HttpFunctionsModule, server: Server) -> None:
    with pytest.raises(EngineError) as caught:
        await _call(module, f"{server.base}/deep")
    # before: "… is not JSON: '[[[[…'", though it is JSON, only deeper than the engine takes
    assert caught.value.code == "invalid_response"
    assert "nested deeper than 128 levels" in caught.value.message, caught.value


async def _poisoned(module: HttpFunctionsModule, server: Server) -> Any:
    """Call ``/a``, have the server write an answer to no request on that idle connection, and wait until the pool
    holds those bytes; the module's connector."""
    assert await _call(module, f"{server.base}/a", "tenant.a") == {"for": "a"}
    await server.poison()
    session = module._session
    assert session is not None
    pooled = session.connector._conns  # type: ignore[union-attr]  # aiohttp's pool, read by this test only
    await until(lambda: any(getattr(p, "should_close", False) for held in pooled.values() for p, _ in held))
    return session.connector


async def test_bytes_written_on_an_idle_connection_reach_no_call(module: HttpFunctionsModule,
                                                                 server: Server) -> None:
    await _poisoned(module, server)
    # before: {'poisoned': True}, the answer to no request, as the other function's result
    assert await _call(module, f"{server.base}/b", "tenant.b") == {"for": "b"}
    assert [request["path"] for request in server.requests] == ["a", "b"]


async def test_an_encoded_body_is_bounded_as_sent_too(module: HttpFunctionsModule, server: Server) -> None:
    # empty deflate blocks decode to nothing: before, the decoded bound never tripped and it was read whole
    with pytest.raises(EngineError) as caught:
        await _call(module, f"{server.base}/deflate-endless-blocks")
    assert caught.value.code == "result_not_sent" and "max_message_size" in caught.value.message


async def test_an_empty_encoded_body_of_stated_length_is_an_empty_result(module: HttpFunctionsModule,
                                                                         server: Server) -> None:
    assert await _call(module, f"{server.base}/gzip-nothing-length") is None


async def test_an_endpoint_that_wrote_on_an_idle_connection_gets_no_reuse(module: HttpFunctionsModule,
                                                                          server: Server) -> None:
    connector = await _poisoned(module, server)
    assert await _call(module, f"{server.base}/b", "tenant.b") == {"for": "b"}
    assert connector.stray_endpoints == 1  # type: ignore[union-attr]
    before = server.connections
    for _ in range(3):  # a late answer could otherwise meet a request already sent on a reused connection
        assert await _call(module, f"{server.base}/b", "tenant.b") == {"for": "b"}
    assert server.connections == before + 3


async def test_stray_endpoints_are_remembered_boundedly_and_logged_rate_limited(
        caplog: pytest.LogCaptureFixture) -> None:
    from iii_engine.modules.http import endpoint_client

    caplog.set_level(logging.WARNING, logger="iii_engine.modules.http.endpoint_client")
    connector = endpoint_client.FreshConnector()
    try:
        keys = [("host", port) for port in range(endpoint_client._MAX_STRAY_ENDPOINTS + 500)]
        for key in keys:
            connector._no_reuse(key)
        connector._no_reuse(keys[-1])  # seen again: refreshed, not counted again
        assert len(connector._stray) == endpoint_client._MAX_STRAY_ENDPOINTS
        assert connector.stray_endpoints == len(keys) and keys[-1] in connector._stray
        connector.flush_log()
        lines = [r.getMessage() for r in caplog.records]
        # before: one warning per endpoint (12,000 for 2 x 6,000 in the attack), and a key seen again evicted another
        assert len(lines) == 2 and lines[1].startswith(f"HTTP functions: {len(keys) - 1} endpoint(s)"), lines[:3]
    finally:
        await connector.close()


async def test_a_close_delimited_body_ended_by_a_clean_close_is_whole(module: HttpFunctionsModule,
                                                                      server: Server) -> None:
    assert await _call(module, f"{server.base}/close-whole") == int(LONG_NUMBER)


async def test_a_whole_close_delimited_answer_whose_connection_is_reset_is_still_the_result(
        module: HttpFunctionsModule) -> None:
    """An endpoint that answers without reading all of the request has its kernel reset the connection at its
    close: the answer is whole. (Taking a reset for a cut-off body failed every such call, and a queue ran its job
    again; a crash half-way closes the connection like a finished answer anyway, so a reset tells nothing.)"""
    listener = socket.create_server(("127.0.0.1", 0))
    ran = 0

    def serve() -> None:
        nonlocal ran
        for _ in range(3):
            peer, _ = listener.accept()
            with peer:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += peer.recv(65536)
                ran += 1
                peer.sendall(CLOSE_DELIMITED + LONG_NUMBER)  # most of the request body left unread

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        await module.register_external("unread", {"url": url, "timeout_ms": 5000}, None)
        for _ in range(3):
            assert await module.call("unread", {"pad": "p" * 200_000}) == int(LONG_NUMBER)
        assert ran == 3
    finally:
        listener.close()
        thread.join(5)
