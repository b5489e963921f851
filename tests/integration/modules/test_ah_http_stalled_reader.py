"""A client that stops reading a streamed response is cut after ``send_timeout``: it gives back its request slot
and its handler's writer is closed, instead of holding both for as long as the stream runs."""

from __future__ import annotations

import asyncio
import socket

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii_engine.modules.http.channels import channel_url
from tests.integration.modules.test_http_api_bounds import Start, _route, api
from tests.polling import until

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")

CHUNK = b"x" * 65536
MAX_CHUNKS = 4096  # 256 MiB: far more than every buffer on the way holds


async def test_a_client_that_stops_reading_a_stream_is_cut_and_frees_its_slot(api: Start) -> None:
    engine, module, _client = await api(send_timeout=500, concurrency_request_limit=1, slot_timeout=200)
    worker = await _route(engine, "download", "download")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stalled, ("127.0.0.1", module.port))
    await loop.sock_sendall(stalled, b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")  # then it never reads
    request = await worker.expect("invokefunction")
    written = 0
    try:
        async with websockets.connect(channel_url(engine.url, request["data"]["response"]),
                                      compression=None) as out:
            with pytest.raises(ConnectionClosed):
                for _ in range(MAX_CHUNKS):
                    await asyncio.wait_for(out.send(CHUNK), 10)  # before: blocked here for good (TimeoutError)
                    written += 1
        # the slot is free again: the next request reaches the handler instead of waiting out slot_timeout
        await until(lambda: module.in_flight == 0, within=10)
        assert written < MAX_CHUNKS
    finally:
        stalled.close()
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": "download"})
