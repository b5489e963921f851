"""tests.ports.reserve_port: the port a test holds for a server it starts later stays its own, and the server
(asyncio's listener, as the engine's, or redis-server) can still listen on it."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.ports import reserve_port


async def test_a_reserved_port_refuses_clients_keeps_other_binds_off_and_takes_a_server() -> None:
    with reserve_port() as held:
        port = held.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        with socket.socket() as other, pytest.raises(OSError, match="Address already in use"):
            other.bind(("127.0.0.1", port))
        # Linux gives a port held this way to no bind to port 0 (its first choice skips every port in use)
        for _ in range(2000):
            with socket.socket() as picked:
                picked.bind(("127.0.0.1", 0))
                assert picked.getsockname()[1] != port
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", port)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
