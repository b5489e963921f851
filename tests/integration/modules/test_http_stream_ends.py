"""How a streamed REST API response ends besides its handler closing its writer: a client that stops reading is cut
after ``send_timeout`` whatever the frame size, and its request slot is freed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
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
