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


async def test_streams_nobody_reads_hold_one_bound_together() -> None:
    """REST response channels belong to no worker: before, no bound on what their queues hold together, and each
    stalled client held its channel's whole queue (60 clients: +525 MB) until send_timeout cut it."""
    from iii_engine import Engine, EngineConfig, ModuleSpec
    from iii_engine.config import ChannelSettings

    bound, queue = 1 << 20, 4 << 20
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, "send_timeout": 20_000})
    config = EngineConfig(host="127.0.0.1", port=0, modules=[spec],
                          channels=ChannelSettings(max_held_bytes_per_worker=bound, max_queued_bytes=queue))
    async with Engine(config=config) as engine:
        module = engine.module("http_api")
        assert module is not None
        worker = await _route(engine, "download", "download")
        loop = asyncio.get_running_loop()
        clients: list[socket.socket] = []
        writers: list[websockets.ClientConnection] = []
        try:
            for _ in range(3):
                stalled = socket.socket()
                stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stalled.setblocking(False)
                await loop.sock_connect(stalled, ("127.0.0.1", module.port))  # type: ignore[attr-defined]
                await loop.sock_sendall(stalled, b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")  # then never reads
                clients.append(stalled)
                request = await worker.expect("invokefunction")
                out = await websockets.connect(channel_url(engine.url, request["data"]["response"]),
                                               compression=None)
                writers.append(out)
                for _ in range(queue // len(CHUNK) + 64):  # more than its queue holds
                    try:
                        await asyncio.wait_for(out.send(CHUNK), 0.5)
                    except TimeoutError:
                        break  # no longer read: held, or in the socket buffers on the way
            held = engine.channels.held_stats()
            # before: each queue full, 12 MiB held against no bound but max_queued_bytes per channel
            assert held["peak_held_bytes"] <= bound + 2 * len(CHUNK), held
            assert held["peak_unowned"] == held["peak_held_bytes"], held
        finally:
            for out in writers:
                out.transport.abort()  # (a Close would wait for a relay that does not read it)
            for stalled in clients:
                stalled.close()
