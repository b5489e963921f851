"""The stream socket counts a connection against ``max_clients`` from its TCP accept.

Before: a client counted once its handshake was done (or its auth call began). Connections that never sent their
upgrade request were not counted at all: each held a descriptor until websockets' 10 s open_timeout, and a flood
of them took descriptors without bound (and the engine's share of the open-file limit with them). Past
max_clients, the oldest of them gives its place to the newer one (test_stream_socket_silent_handshakes.py).
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from iii_engine import Engine
from iii_engine.modules.stream import socket as stream_socket
from tests.polling import until

from .helpers import SocketClient, engine_config, stream_module

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.our_engine("bounds the stream socket's connections with its own max_clients")]

MAX_CLIENTS = 8
EXTRA = 6
REFUSING = 4  # the connections kept past max_clients to be answered 503 (checked against the module's after use)
TOO_MANY = f"too many stream clients connected (max_clients {MAX_CLIENTS})\n".encode()

Silent = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _silent(port: int, n: int) -> list[Silent]:
    """``n`` TCP connections that never send an upgrade request."""
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]


async def _closed_at_once(silent: list[Silent], expected: int) -> list[bytes]:
    """What the first ``expected`` connections the engine closes read (each ends with ``b""`` once closed)."""
    reads = [asyncio.ensure_future(reader.read(1)) for reader, _ in silent]
    try:
        ended: set[asyncio.Future[bytes]] = set()
        async with asyncio.timeout(5):  # far above an accept's close; far below websockets' 10 s open_timeout
            while len(ended) < expected:
                done, _ = await asyncio.wait([read for read in reads if read not in ended],
                                             return_when=asyncio.FIRST_COMPLETED)
                ended |= done
        return [read.result() for read in ended]
    except TimeoutError:
        raise AssertionError(f"{len(ended)} of {len(silent)} silent connections closed, not {expected}") from None
    finally:
        for read in reads:
            read.cancel()


async def _close(silent: list[Silent]) -> None:
    for _, writer in silent:
        writer.close()
    for _, writer in silent:
        await writer.wait_closed()


async def _joins_once_they_closed(engine: Engine) -> None:
    """Once the silent connections are closed their places come back: a client connects and joins."""
    socket = stream_module(engine).socket
    assert socket is not None
    await until(lambda: socket._accepted == socket._refusing == 0, within=5)
    client = await SocketClient.connect(engine)
    await client.join("s0", "s", "g")
    assert (await client.recv())["event"]["type"] == "sync"
    await client.close()


async def test_connections_that_never_upgrade_are_held_at_most_to_max_clients() -> None:
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        silent = await _silent(socket.port, MAX_CLIENTS + REFUSING + EXTRA)
        gone = REFUSING + EXTRA
        try:
            # past max_clients, the oldest give their places to the newer ones: none is kept to be answered 503,
            # having sent nothing to answer
            assert await _closed_at_once(silent, gone) == [b""] * gone
            assert [reader.at_eof() for reader, _ in silent] == [True] * gone + [False] * MAX_CLIENTS
            assert (socket._accepted, socket._refusing, socket.evicted_connections, socket.refused_connections) == (
                MAX_CLIENTS, 0, gone, 0)
            assert REFUSING == stream_socket._REFUSING_MAX
        finally:
            await _close(silent)
        await _joins_once_they_closed(engine)


async def test_a_client_past_max_clients_clients_is_answered_503_naming_the_setting() -> None:
    async with Engine(config=engine_config(max_clients=MAX_CLIENTS)) as engine:
        clients = [await SocketClient.connect(engine) for _ in range(MAX_CLIENTS)]
        try:
            with pytest.raises(InvalidStatus) as refused:
                await asyncio.wait_for(SocketClient.connect(engine), 5)
            assert (refused.value.response.status_code, refused.value.response.body) == (503, TOO_MANY)
        finally:
            for client in clients:
                await client.close()
        await _joins_once_they_closed(engine)
