"""Attack on 2d29d05's frame-buffer loans: connections to our engine that send a large frame's header and then
drop must give their loans (and the buffers) back when they close, not when the garbage collector finds them."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from iii import ws_fastpath
from iii.ws_fastpath import FrameReader
from iii_engine import Engine

pytestmark = pytest.mark.our_engine("reads the engine's frame readers in-process")


@pytest.fixture
def no_cycle_collection() -> Iterator[None]:
    """Loans must come back with the connection, whenever the cycle collector runs: keep it out of the test."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _upgraded(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return reader, writer


def _lent() -> int:
    readers = getattr(ws_fastpath._LENT, "readers", None)
    return 0 if readers is None else len(readers)


async def test_a_connection_dropped_mid_frame_repays_its_loan(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, no_cycle_collection: None) -> None:
    count = 4  # LENT_BYTES: four frames' buffers
    fed = lost = 0
    all_fed, all_lost = asyncio.Event(), asyncio.Event()
    feed, connection_lost = FrameReader.feed, ws_fastpath._FastReceive.connection_lost

    def counted_feed(self: FrameReader, data: Any) -> Any:
        nonlocal fed
        fed += 1
        if fed >= count:
            all_fed.set()
        return feed(self, data)

    def counted_lost(self: Any, exc: Exception | None) -> None:
        nonlocal lost
        connection_lost(self, exc)
        lost += 1
        if lost >= count:
            all_lost.set()

    url = urlsplit(engine.url)
    assert url.hostname is not None and url.port is not None
    sockets = [await _upgraded(url.hostname, url.port) for _ in range(count)]
    monkeypatch.setattr(FrameReader, "feed", counted_feed)
    monkeypatch.setattr(ws_fastpath._FastReceive, "connection_lost", counted_lost)
    lent_before = _lent()
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 983_040) + os.urandom(4)  # a 960 KiB binary frame's header
    for _, writer in sockets:
        writer.write(header)
    await asyncio.wait_for(all_fed.wait(), 10)
    assert _lent() == lent_before + count  # each got a 960 KiB buffer on loan
    for _, writer in sockets:
        writer.transport.abort()  # gone mid-frame
    await asyncio.wait_for(all_lost.wait(), 10)
    assert _lent() == lent_before, "connections gone mid-frame still hold their loans"
