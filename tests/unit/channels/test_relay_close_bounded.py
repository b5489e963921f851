"""``ChannelRelay.close()`` ends in bounded time when a reader never reads: a socket's close waits for its buffer to
drain, so a relay served on its own (the engine aborts its sockets first) waited for good; its closes now get
``CLOSE_TIMEOUT_S``, then the ends still open are dropped."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
import websockets

from iii.channel_end import WebSocketEnd
from iii.channels import build_channel_url
from iii_engine.channels import ChannelRelay
from iii_engine.closing import CLOSE_TIMEOUT_S

from .relay_server import relay_server


def _silent_reader(url: str) -> socket.socket:
    """A reader that sends its upgrade request and never reads a byte, with a small receive buffer."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("how", ["close", "stopping then close", "close cancelled"])
async def test_close_drops_a_reader_that_never_reads_after_its_bound(how: str) -> None:
    relay = ChannelRelay(attach_timeout_s=30.0)
    async with relay_server(relay) as (base, _):
        refs = relay.create(4, owner="w")
        ref_r, ref_w = refs["reader"], refs["writer"]
        reader = _silent_reader(build_channel_url(base, ref_r["channel_id"], ref_r["access_key"], ref_r["direction"]))
        writer = await websockets.connect(
            build_channel_url(base, ref_w["channel_id"], ref_w["access_key"], ref_w["direction"]),
            ping_interval=None, compression=None, max_size=None)
        try:
            channel = relay._channels[ref_w["channel_id"]]

            async def push() -> None:
                while True:
                    await writer.send(b"x" * 65536)

            pushing = asyncio.create_task(push())
            for _ in range(2000):  # the relay's queue fills once the reader's socket takes nothing more (<= 20 s)
                if channel.machine.queued_bytes >= 4 * 65536:
                    break
                await asyncio.sleep(0.01)
            assert channel.machine.queued_bytes >= 4 * 65536, channel.machine.queued_bytes
            reader_end = channel.reader_end
            assert isinstance(reader_end, WebSocketEnd)
            started = time.monotonic()
            if how == "stopping then close":  # the engine's order: stopping() begins the closes in the background
                relay.stopping()
            if how == "close cancelled":
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(relay.close(), 0.5)
            else:
                await relay.close()  # before: waited for the reader's socket to drain, for good
            took = time.monotonic() - started
            assert took < CLOSE_TIMEOUT_S + 5, took
            assert relay._channels == {}
            # the relay's socket to the reader is dropped, not left closing with its buffer full (stopping() first,
            # or a cancel, left it so before)
            await asyncio.wait_for(reader_end.ws.wait_closed(), 5)
            pushing.cancel()
        finally:
            writer.transport.abort()
            reader.close()
