"""What ``register_worker``'s "not an iii engine" check must not take for a server that is not one: an engine not up
yet behind a TCP forwarder (docker's published ports, ``kubectl port-forward``, ``ssh -L``), which accepts the
connection and closes it without a word while nothing listens behind it, or behind a reverse proxy that answers 404
until its route to the engine is up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from iii import InitOptions, ReconnectionConfig, register_worker
from iii.connection import NOT_AN_ENGINE_TRIES

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()


class _Forwarder:
    """A TCP forwarder to ``backend``: a connection it cannot pass on (refused there) is closed at once."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.closed_unanswered = 0
        self.changed = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            back_reader, back_writer = await asyncio.open_connection("127.0.0.1", self.backend)
        except OSError:
            writer.close()
            self.closed_unanswered += 1
            self.changed.set()
            return
        await asyncio.gather(_pipe(reader, back_writer), _pipe(back_reader, writer))


@pytest.fixture
async def forwarder() -> AsyncIterator[_Forwarder]:
    forward = _Forwarder(_free_port())  # nothing listens there yet
    server = await asyncio.start_server(forward.handle, "127.0.0.1", 0)
    forward.port = server.sockets[0].getsockname()[1]
    async with server:
        yield forward


async def test_an_engine_not_up_yet_behind_a_forwarder_is_waited_for(engine_url: str,
                                                                     forwarder: _Forwarder) -> None:
    registering = asyncio.ensure_future(asyncio.to_thread(
        register_worker, f"ws://127.0.0.1:{forwarder.port}", InitOptions(reconnection_config=FAST)))
    try:
        # (bounded: before, the client stopped trying at the NOT_AN_ENGINE_TRIES-th close and this wait ran out)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                while forwarder.closed_unanswered < 2 * NOT_AN_ENGINE_TRIES:
                    forwarder.changed.clear()
                    await forwarder.changed.wait()
        forwarder.backend = int(engine_url.rsplit(":", 1)[1])  # the engine is up behind it now
        # before: ConnectionError "ws://... is not an iii engine: no HTTP answer to the WebSocket upgrade (...)"
        client = await registering
        try:
            assert client.get_connection_state() == "connected"
            assert forwarder.closed_unanswered >= 2 * NOT_AN_ENGINE_TRIES
        finally:
            await client.shutdown_async()
    finally:
        if not registering.done():  # (the wait above failed: register_worker gives up within its 30 s)
            forwarder.backend = int(engine_url.rsplit(":", 1)[1])
            with contextlib.suppress(Exception):
                (await registering).shutdown()


async def test_a_proxy_answering_404_before_its_route_to_the_engine_is_up_is_retried(engine_url: str) -> None:
    """A reverse proxy answers 404 until it has a route to a container that is starting (Traefik, an ingress
    controller's default backend), then passes the upgrade on."""
    engine_port = int(engine_url.rsplit(":", 1)[1])
    answered_404 = 0

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered_404
        request = await reader.readuntil(b"\r\n\r\n")
        if answered_404 < NOT_AN_ENGINE_TRIES - 1:
            answered_404 += 1
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
                         b"404 page not found\n")
            await writer.drain()
            writer.close()
            return
        back_reader, back_writer = await asyncio.open_connection("127.0.0.1", engine_port)
        back_writer.write(request)
        await asyncio.gather(_pipe(reader, back_writer), _pipe(back_reader, writer))

    async with await asyncio.start_server(proxy, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        # before: ConnectionError "ws://... is not an iii engine: HTTP 404 on the WebSocket upgrade (...)"
        client = await asyncio.to_thread(register_worker, url, InitOptions(reconnection_config=FAST))
        try:
            assert client.get_connection_state() == "connected"
            assert answered_404 == NOT_AN_ENGINE_TRIES - 1
        finally:
            await client.shutdown_async()
