"""A stream-socket client that never reads what it is sent is reset once it took nothing for
``slow_close_timeout_ms``; one that reads, however slowly, gets everything.

Before, a write waited for the socket to drain with no deadline, and websockets' keep-alive could not tell (its
ping waits for the same drain): a client that joined a big group and never read kept its sync, and what was queued
behind it, in the engine for as long as its TCP connection lived (30 such sockets: 84 -> 571 MB, all still
connected after a minute), under ``client_queue_bytes`` so never closed with 1013.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import pytest

from iii.ws_fastpath import client_frame
from iii_engine import Engine
from tests.not_upgraded import upgrade_request
from tests.polling import until

from .helpers import Worker, engine_config, stream_module

pytestmark = pytest.mark.our_engine("bounds what the stream socket holds for a client")

MiB = 1024 * 1024
ITEMS = 10  # 10 MiB of sync: more than the kernel's socket buffers take, so the engine's write waits


async def _fill(worker: Worker) -> None:
    blob = "x" * MiB
    for n in range(ITEMS):
        await worker.result("stream::set", {"stream_name": "big", "group_id": "g", "item_id": str(n),
                                            "data": blob})


async def _joined_raw(port: int, receive_buffer: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket with a receive buffer of ``receive_buffer`` bytes that has sent one join of the big group."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    writer.write(upgrade_request("/"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    join = {"type": "join", "data": {"subscriptionId": "s", "streamName": "big", "groupId": "g"}}
    writer.write(client_frame(True, memoryview(json.dumps(join).encode()), os.urandom(4)))
    await writer.drain()
    return reader, writer


async def test_a_client_that_never_reads_its_sync_is_reset_and_let_go() -> None:
    async with Engine(config=engine_config(slow_close_timeout_ms=300)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        worker = await Worker.connect(engine.url)
        await _fill(worker)
        _, writer = await _joined_raw(server.port, 4096)
        # the sync's write waits on it: what the kernel does not take waits in the transport
        await until(lambda: any(c.ws.transport.get_write_buffer_size() > 0 for c in server._clients))
        (client,) = server._clients
        await until(lambda: not server._clients, within=5)  # before: still connected, its sync held, for good
        assert client.queued_bytes == 0 and client.queue.empty()
        writer.close()
        await worker.close()


async def _read_frame(reader: asyncio.StreamReader, pace: float) -> Any:
    """One unmasked server text frame, read 64 KiB at a time with a pause of ``pace`` seconds between reads."""
    head = await reader.readexactly(2)
    assert head[0] == 0x81, head
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    payload = bytearray()
    while len(payload) < size:
        payload += await reader.readexactly(min(64 * 1024, size - len(payload)))
        await asyncio.sleep(pace)  # a slow reader's pace, not a synchronisation
    return json.loads(payload)


async def test_a_client_that_reads_slowly_gets_its_whole_sync() -> None:
    """Slower than the engine writes, for several times ``slow_close_timeout_ms``: it takes bytes between every
    look, so it is never cut. Judged by the transport's buffer alone (the kernel's send buffer not counted), it
    was cut at once: the kernel takes more of that buffer only once a third of its own is free."""
    async with Engine(config=engine_config(slow_close_timeout_ms=500)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        worker = await Worker.connect(engine.url)
        await _fill(worker)
        reader, writer = await _joined_raw(server.port, 16 * 1024)
        started = asyncio.get_running_loop().time()
        frame = await asyncio.wait_for(_read_frame(reader, 0.01), 20)
        took = asyncio.get_running_loop().time() - started
        assert frame["event"]["type"] == "sync" and len(frame["event"]["data"]) == ITEMS
        assert took > 2 * 0.5, f"the sync took {took:.2f} s: not slow enough to test anything"
        assert server._clients  # still connected
        writer.close()
        await worker.close()
