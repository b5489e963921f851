"""An HTTP-invoked function's endpoint that answers garbage or stalls fails the call with one bounded line that
says what went wrong (the HTTP client's parser errors span lines and quote what they refused)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine
from iii_engine.modules.base import EngineError
from iii_engine.modules.http.functions import HttpFunctionsModule
from tests.integration.modules.test_http_functions import LOCAL_RULES, _engine

pytestmark = pytest.mark.our_engine("calls our engine's HTTP functions module directly")

# what the fake endpoint writes back for each path, after reading the request head
ANSWERS = {
    "garbage": b"garbage garbage\r\n\r\n",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 100_000 + b"\r\n\r\n",
    "stall": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{",
}


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readline()).split()[1].decode().strip("/")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(ANSWERS[path])
        await writer.drain()
        if path == "stall":
            await release.wait()  # the rest of the body never comes while the call waits
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    release.set()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def module() -> AsyncIterator[HttpFunctionsModule]:
    engine: Engine = await _engine(LOCAL_RULES)
    found = engine.module("http_functions")
    assert isinstance(found, HttpFunctionsModule)
    yield found
    await engine.stop()


async def _failure(module: HttpFunctionsModule, url: str, timeout_ms: int = 5000) -> EngineError:
    await module.register_external("hook", {"url": url, "timeout_ms": timeout_ms}, None)
    with pytest.raises(EngineError) as caught:
        await module.call("hook", {"x": 1})
    return caught.value


@pytest.mark.parametrize("path, says", [("garbage", "Bad status line"), ("bad-chunk", "chunk size"),
                                        ("huge-header", "8190 bytes")])
async def test_a_garbage_answer_is_one_bounded_line(module: HttpFunctionsModule, endpoint: str, path: str,
                                                    says: str) -> None:
    error = await _failure(module, f"{endpoint}/{path}")
    # before: the parser's message went out with its line breaks, and the header line it quoted
    assert error.code == "http_request_failed" and says in error.message
    assert "\n" not in error.message and len(error.message) < 2000


async def test_a_body_that_stalls_is_a_timeout_naming_it(module: HttpFunctionsModule, endpoint: str) -> None:
    error = await _failure(module, f"{endpoint}/stall", timeout_ms=300)
    # before: "reading the response of … failed: TimeoutError: CancelledError"
    assert error.code == "http_response_failed"
    assert error.message.endswith("did not arrive whole within 300 ms"), error.message
