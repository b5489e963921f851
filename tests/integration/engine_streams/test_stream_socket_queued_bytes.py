"""Silent stream-socket clients that join a big group again and again cannot make the engine hold their syncs past
``max_queued_bytes``; a repeated sync still waiting is held once; a client that reads keeps getting its events.

Before, each join queued a fresh copy of the group's sync, bounded per client only (``client_queue_bytes``, 32 MiB):
20 silent clients of 40 joins of a 1 MB group took an engine from 68 to 682 MB, held until the 60 s stall reset.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import pytest
import websockets

from iii.ws_fastpath import client_frame
from iii_engine import Engine
from tests.not_upgraded import upgrade_request
from tests.polling import until

from .helpers import Worker, engine_config, stream_module

pytestmark = pytest.mark.our_engine("bounds what the stream socket holds for all clients")

KiB = 1024
MiB = 1024 * KiB
ITEMS = 8  # 8 x 128 KiB: a 1 MiB sync
BOUND = 4 * MiB
SILENT = 4
JOINS = 8


async def _fill(worker: Worker) -> None:
    for n in range(ITEMS):
        await worker.result("stream::set", {"stream_name": "big", "group_id": "g", "item_id": str(n),
                                            "data": "x" * (128 * KiB)})


async def _silent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket that reads nothing (a 4 KiB receive buffer: the engine's writes soon wait)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(upgrade_request("/"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _join(writer: asyncio.StreamWriter, sub_id: str) -> None:
    join = {"type": "join", "data": {"subscriptionId": sub_id, "streamName": "big", "groupId": "g"}}
    writer.write(client_frame(True, memoryview(json.dumps(join).encode()), os.urandom(4)))
    await writer.drain()


def _held(server: Any) -> int:
    """Bytes of the distinct frames queued or held for the socket's clients (a shared frame once)."""
    frames: dict[int, int] = {}
    for client in server._clients:
        for frame in (*client.queue._queue, *(client.held or ())):
            frames[id(frame)] = len(frame)
    return sum(frames.values())


def _joined(server: Any, count: int) -> bool:
    return (sum(len(c.subscriptions) for c in server._clients) >= count
            and all(c.joining is None for c in server._clients))


async def test_repeated_joins_of_an_unchanged_group_hold_its_sync_once() -> None:
    async with Engine(config=engine_config(max_queued_bytes=BOUND)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        worker = await Worker.connect(engine.url)
        await _fill(worker)
        writers = []
        for _ in range(SILENT):
            _, writer = await _silent(server.port)
            writers.append(writer)
            for n in range(JOINS):
                await _join(writer, f"s{n}")
        await until(lambda: _joined(server, SILENT * JOINS), within=20)
        # before: a copy of the 1 MiB sync per join still queued, ~28 MiB; now one
        assert _held(server) < 2 * MiB
        assert not any(client.overflowed for client in server._clients)  # nobody closed for it
        for writer in writers:
            writer.close()
        await worker.close()


async def test_silent_clients_past_the_bound_are_closed_and_a_reader_keeps_its_events() -> None:
    async with Engine(config=engine_config(max_queued_bytes=BOUND)) as engine:
        server = stream_module(engine).socket
        assert server is not None
        worker = await Worker.connect(engine.url)
        await _fill(worker)
        reader = await websockets.connect(stream_module(engine).url, compression=None, max_size=None)
        await reader.send(json.dumps({"type": "join", "data": {"subscriptionId": "r", "streamName": "big",
                                                               "groupId": "g"}}))
        seen: list[Any] = []

        async def read() -> None:
            async for raw in reader:
                event = json.loads(raw)["event"]
                seen.append((event["type"], (event.get("data") or {}) if event["type"] != "sync" else None))

        reading = asyncio.get_running_loop().create_task(read())
        await until(lambda: bool(seen) and seen[0][0] == "sync")
        silent = []
        for _ in range(SILENT):
            silent.append((await _silent(server.port))[1])
        clients = list(server._clients)
        most = 0
        for n in range(JOINS):
            for writer in silent:
                # the group changes between joins: every sync differs, none is shared
                await worker.result("stream::set", {"stream_name": "big", "group_id": "g", "item_id": "0",
                                                    "data": f"{n}" * (128 * KiB)})
                await _join(writer, f"s{n}")
            await until(lambda: all(c.joining is None for c in server._clients))
            most = max(most, _held(server))
        # each silent client's next frame is not counted (nor the one being written): the bound plus one each
        assert most <= BOUND + SILENT * 1100 * KiB, most  # before: every sync queued, ~28 MiB
        # (a client whose writer took nothing yet is given max_queued_bytes's grace, a second, before it is closed)
        await until(lambda: any(c.overflowed for c in clients), within=10)
        reader_client = next(c for c in clients if "r" in c.subscriptions)
        assert not reader_client.overflowed
        await worker.result("stream::set", {"stream_name": "big", "group_id": "g", "item_id": "last",
                                            "data": {"n": 1}})
        await until(lambda: ("create", {"n": 1}) in seen, within=20)  # the reader still gets its events
        assert not reader_client.overflowed
        reading.cancel()
        await reader.close()
        for writer in silent:
            writer.close()
        await worker.close()
