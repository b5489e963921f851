"""A WebSocket peer that answers the upgrade (after ``delay`` s) and then never writes a frame, so a client's close
handshake can only end by its own cut: it reads to the end (``reads=True``) or never reads again, its receive
buffer kept small so the client's writes back up soon.

Example:
    >>> async def demo() -> None:
    ...     async with raw_ws_server(delay=1.0) as (base, peer):
    ...         await peer.requested.wait()
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from iii.channels import ChannelWriter

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SMALL_BUFFER = 4096


class RawPeer:
    """What the peer saw: ``requested`` once an upgrade request arrived, ``ended`` once a connection it read to the
    end reached EOF (dropped or closed by the client)."""

    def __init__(self, delay: float, reads: bool) -> None:
        self.delay = delay
        self.reads = reads
        self.requested = asyncio.Event()
        self.ended = asyncio.Event()
        self.closing = asyncio.Event()  # the server closes: a peer that does not read stops waiting
        self.transports: list[asyncio.WriteTransport] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.transports.append(writer.transport)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requested.set()
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            await asyncio.sleep(self.delay)
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode())
            if not self.reads:
                await self.closing.wait()
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.ended.set()
            writer.close()


@asynccontextmanager
async def raw_ws_server(delay: float = 0.0, reads: bool = True) -> AsyncIterator[tuple[str, RawPeer]]:
    """Serve a :class:`RawPeer` on a free port; yields ``(ws_base_url, peer)``."""
    peer = RawPeer(delay, reads)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL_BUFFER)  # inherited by accepted sockets
    listener.bind(("127.0.0.1", 0))
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        await peer.handle(reader, writer)

    server = await asyncio.start_server(handle, sock=listener)
    try:
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}", peer
    finally:
        server.close()
        peer.closing.set()
        for transport in peer.transports:
            transport.abort()
        # not cancelled: asyncio's stream server logs a handler's cancellation as an error
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)


async def write_until_stuck(writer: ChannelWriter) -> asyncio.Future[None]:
    """Write 64 KiB blocks until one waits (the socket's buffers full before a peer that does not read); that
    write, still under way."""
    while True:
        write = asyncio.ensure_future(writer.write(bytes(1 << 16)))
        done, _ = await asyncio.wait({write}, timeout=0.3)
        if not done:
            return write
        await write
