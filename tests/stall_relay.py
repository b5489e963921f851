"""A TCP relay in front of an engine that can stop reading what its client sends (an engine that stalled: frozen,
SIGSTOP, swapped out, while its kernel keeps the TCP connection open with the window shut) and cut every connection.

Its listening socket has a small receive buffer, so a client backs up after ~100 KiB instead of megabytes (set a
small send buffer on the client's socket too, :data:`SMALL_BUFFER`).

Example::

    relay = Relay(engine_port)
    await relay.start()            # then connect to relay.url
    relay.flowing.clear()          # stop reading; relay.flowing.set() reads again
    relay.cut()                    # reset every connection, both ways
    relay.blackhole()              # connections made so far go silent both ways, still open (half-open);
                                   # new ones flow
    await relay.close()
"""

from __future__ import annotations

import asyncio
import socket

SMALL_BUFFER = 4096
"""Bytes of socket buffer (the relay's receive side; use it for the client's send side)."""


class Relay:
    """A TCP relay in front of the remote engine that can stop reading what the link sends (a remote that stalled)
    and cut every connection at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.transports: list[asyncio.WriteTransport] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self._silenced: set[asyncio.BaseTransport] = set()  # writers of blackholed connections

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # inherited by accepted sockets
        listener.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._accept, sock=listener, limit=SMALL_BUFFER)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.transports += [writer.transport, up_writer.transport]
        for pump in (self._pump(reader, up_writer, gated=True), self._pump(up_reader, writer, gated=False)):
            task = asyncio.ensure_future(pump)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool) -> None:
        try:
            while True:
                if gated:
                    await self.flowing.wait()
                data = await reader.read(SMALL_BUFFER)
                if not data:
                    break
                if writer.transport in self._silenced:
                    continue  # blackholed: taken and thrown away, the connection left open
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def blackhole(self) -> None:
        """Connections made so far go silent both ways and stay open, as a half-open TCP connection (a NAT or a
        firewall that forgot it); later connections flow."""
        self._silenced.update(self.transports)

    def cut(self) -> None:
        """Drop every connection (a reset both ways)."""
        for transport in self.transports:
            transport.abort()
        self.transports.clear()

    async def close(self) -> None:
        self.cut()
        for task in list(self.tasks):
            task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
