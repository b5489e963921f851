"""A client that half-closes its connection (``shutdown(SHUT_WR)``) before its request body ended gets 400, as a body
cut short by a closed connection does, instead of a connection closed with no answer; the handler never runs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_api_bounds import Start, api

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")


async def test_a_body_cut_short_by_a_half_close_is_answered_400(api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, module, _client = await api(body_timeout=10_000)
    worker = await RawWorker.connect(engine.url)
    await worker.register("upload")
    await worker.send({"type": "registertrigger", "id": "t-upload", "trigger_type": "http", "function_id": "upload",
                       "config": {"api_path": "upload", "http_method": "POST"}})
    await worker.sync()
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n")  # no last chunk
    await writer.drain()
    writer.write_eof()
    # before: b"" at once (closed, no answer); the engine must not wait out body_timeout either
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert b"closed its side of the connection before the body ended" in answer
    await worker.nothing_for(0.1)  # never invoked
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
