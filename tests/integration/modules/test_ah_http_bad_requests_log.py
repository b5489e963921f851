"""A request the HTTP parser refuses (400) is one INFO line in the engine's log, not an ERROR with a traceback:
any client can send them as fast as it likes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.integration.modules.test_http_api_bounds import Start, api

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("reads our engine's log")


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)  # the server closes after a 400
    finally:
        writer.close()


@pytest.mark.parametrize("request_bytes, says", [
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "8190 bytes"),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nab\r\n0\r\n\r\n", "chunk size"),
])
async def test_a_request_the_parser_refuses_is_one_info_line(api: Start, caplog: pytest.LogCaptureFixture,
                                                             request_bytes: bytes, says: str) -> None:
    _engine, module, _client = await api()
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert (await _raw(module.port, request_bytes)).startswith(b"HTTP/1.0 400 ")
    # before: three ERROR records "Error handling request from …", each with the parser's traceback
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    refused = [r.getMessage() for r in caplog.records if "refused with 400" in r.getMessage()]
    assert len(refused) == 3 and says in refused[0] and "\n" not in refused[0] and len(refused[0]) < 400
