"""``to_stream`` into a TLS stream whose peer reads everything and closes: it returns the byte count. A wait for an
empty buffer (``set_write_buffer_limits(high=0)`` + ``drain()``) never returned over TLS, whose transport pauses
writing at a buffer of ``high`` or more: every TLS copy hung, or failed at ``close_timeout`` with all bytes sent."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator

import pytest

from iii_channels import from_iterable, to_stream
from iii_engine.testing import local_channel
from tests.integration.channels.test_attack_channels_today import tls_contexts

tls = tls_contexts  # the fixture, shared


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for at in range(0, len(data), 65_536):
        yield data[at:at + 65_536]


@pytest.mark.parametrize("size", [1000, 1 << 20])
async def test_a_tls_copy_returns_once_its_peer_has_it_all(tls: tuple[ssl.SSLContext, ssl.SSLContext],
                                                           size: int) -> None:
    server_context, client_context = tls
    data = os.urandom(size)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    async with server, local_channel() as channel:
        _, stream = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        copied, _ = await asyncio.wait_for(asyncio.gather(to_stream(channel.reader, stream, close_timeout=10),
                                                          from_iterable(channel.writer, _chunks(data))), 15)
        assert copied == size
        assert hashlib.sha256(await received).digest() == hashlib.sha256(data).digest()
