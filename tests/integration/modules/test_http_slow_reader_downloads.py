"""A client reading a large download steadily but slowly is not cut: neither by ``send_timeout`` (a handler's 960 KiB
frame took more than that to drain) nor by the grace after a result (its writer closed, the rest only draining)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import websockets

from iii_engine.modules.http import api as api_module
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from tests.integration.modules.test_http_api_bounds import Start, _route, api

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")

FRAME = b"x" * (960 * 1024)  # the frame size our SDK's writers use
FRAMES = 6  # 5.6 MiB: more than the kernel buffers on the way hold
RATE = 2 << 20  # bytes/s the client reads: a 960 KiB frame takes ~0.5 s to drain


async def _read_slowly(module: RestApiModule, path: str) -> bytes:
    """GET ``path`` and read it at :data:`RATE` (small receive buffer) until the body ends or the engine closes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    got = b""
    try:
        await loop.sock_connect(sock, ("127.0.0.1", module.port))
        await loop.sock_sendall(sock, f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        start = time.monotonic()
        async with asyncio.timeout(15):
            while not got.endswith(b"\r\n0\r\n\r\n"):
                try:
                    piece = await loop.sock_recv(sock, RATE // 50)
                except ConnectionResetError:
                    break
                if not piece:
                    break
                got += piece
                await asyncio.sleep(max(0.0, len(got) / RATE - (time.monotonic() - start)))
    finally:
        sock.close()
    return got


async def _download(api: Start, result: dict[str, object] | None, **settings: object) -> bytes:
    engine, module, _client = await api(**settings)
    worker = await _route(engine, "download", "download")
    reading = asyncio.ensure_future(_read_slowly(module, "download"))
    request = await worker.expect("invokefunction")
    async with websockets.connect(channel_url(engine.url, request["data"]["response"]), compression=None,
                                  max_size=None) as out:
        for _ in range(FRAMES):
            await out.send(FRAME)
    await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                       "function_id": "download", **({"result": result} if result is not None else {})})
    return await reading


async def test_a_slow_steady_reader_of_large_frames_is_not_cut_by_send_timeout(api: Start) -> None:
    # before: cut after the first frame's write (~4 MB read): the whole 960 KiB write was timed at once
    got = await _download(api, None, send_timeout=150)
    assert got.endswith(b"\r\n0\r\n\r\n")
    assert got.count(b"x") == FRAMES * len(FRAME)


async def test_a_result_then_a_closed_writer_lets_a_slow_reader_finish(
        api: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "RESULT_GRACE_S", 0.2, raising=False)
    # before: cut once the connection's buffer sat still for the grace while the kernel's drained
    got = await _download(api, {"status_code": 200})
    assert got.endswith(b"\r\n0\r\n\r\n")
    assert got.count(b"x") == FRAMES * len(FRAME)
