"""Connections that never become a WebSocket, for the tests of the listeners that count them instead of logging
websockets' lines about each (the engine's port, the stream socket)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["NOT_UPGRADED", "sent_then_closed", "upgrade_request", "websockets_lines"]


def upgrade_request(target: str) -> bytes:
    """A WebSocket upgrade request for ``target``."""
    return (f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


NOT_UPGRADED = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # the start of a TLS ClientHello
    b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",  # HTTP/1.0: websockets answers 505
    b"not http at all\r\n\r\n",  # answered 400
    b"",  # closed before any request
    upgrade_request("/metrics"),  # a path answered 404
    upgrade_request("//[x/"),  # not a URL: answered 400 (urlsplit raises)
]


async def sent_then_closed(port: int, data: bytes) -> None:
    """Send ``data``, then end the connection (the listener answers what it can first: websockets reads its request
    before it sees the end)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def websockets_lines(messages: Iterable[str]) -> list[str]:
    """websockets' own per-connection lines among ``messages``."""
    return [m for m in messages if m in ("connection open", "connection closed")
            or m.startswith(("connection rejected", "HTTP response sent"))]
