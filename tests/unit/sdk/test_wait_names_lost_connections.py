"""``wait_until_connected`` against a server that completes the WebSocket upgrade and then sends what is not a
WebSocket frame: each connection is made and lost at once. Its error said "cannot reach the engine … (0 attempts)",
with no last error, as if the server had never been reached; it now names the connections made and how the last one
ended."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.iii import III

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=50, jitter_factor=0.0)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def test_a_server_whose_connections_never_last_is_named_as_reached() -> None:
    async def garbage_after_upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"\xff" * 64)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage_after_upgrade, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = III(f"ws://127.0.0.1:{port}", InitOptions(reconnection_config=FAST))
        try:
            with pytest.raises(ConnectionError) as caught:
                await asyncio.to_thread(client.wait_until_connected, 1.5)
        finally:
            await asyncio.to_thread(client.shutdown)
    message = str(caught.value)
    assert "cannot reach the engine" in message and "the last connection lost:" in message, message
    assert "connected " in message and " time" in message, message
