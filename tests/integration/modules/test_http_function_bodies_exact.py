"""An HTTP-invoked function's result is the whole answer to its own request, or the call fails saying why: a gzip
body cut off before its end was taken for whole (aiohttp's decoding checks only deflate's end), and bytes a server
wrote on an idle kept-alive connection were read by the next request as its answer, whichever function made it."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import struct
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
LONG_NUMBER = b"7" * 4000  # any prefix of it is JSON too


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
                if path.startswith("close-"):
                    await self._close_delimited(writer, reset=path == "close-reset")
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

    @staticmethod
    async def _close_delimited(writer: asyncio.StreamWriter, reset: bool) -> None:
        """A body that only the connection's close ends (no Content-Length, not chunked): half of a JSON number,
        then a reset (an endpoint that crashed), or all of it, then a clean close."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        writer.write(LONG_NUMBER[:len(LONG_NUMBER) // 2] if reset else LONG_NUMBER)
        await writer.drain()
        if reset:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

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


async def test_a_close_delimited_body_cut_by_a_reset_fails_the_call(module: HttpFunctionsModule,
                                                                     server: Server) -> None:
    with pytest.raises(EngineError) as caught:
        await _call(module, f"{server.base}/close-reset")
    # before: the 2,000 digits before the reset were the result, a success
    assert caught.value.code == "http_response_failed", caught.value
    assert "was not read whole" in caught.value.message and "cut before the endpoint closed it" in \
        caught.value.message, caught.value


async def test_a_close_delimited_body_ended_by_a_clean_close_is_whole(module: HttpFunctionsModule,
                                                                      server: Server) -> None:
    assert await _call(module, f"{server.base}/close-whole") == int(LONG_NUMBER)
