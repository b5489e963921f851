"""A peer holding connections to our engine's control socket on a large frame's header alone (1ec746a gave such a
frame a buffer of its whole size as soon as its header was in): what the engine holds stays bounded."""

from __future__ import annotations

import asyncio
import os
import struct
import tracemalloc
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.chaos.common import RawWebSocket
from iii.ws_fastpath import LENT_BYTES, FrameReader
from iii_engine import Engine

pytestmark = pytest.mark.our_engine("reads the engine's memory in-process")

CONNECTIONS = 32


async def test_frame_headers_alone_do_not_make_the_engine_hold_a_frame_each(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    fed = 0
    all_fed = asyncio.Event()
    feed = FrameReader.feed

    def counted(self: FrameReader, data: Any, *args: Any) -> Any:  # the engine read a header: sync without sleeping
        nonlocal fed
        fed += 1
        if fed >= CONNECTIONS:
            all_fed.set()
        return feed(self, data, *args)

    url = urlsplit(engine.url)
    assert url.hostname is not None and url.port is not None
    sockets = [await RawWebSocket.connect(url.port, drain=False) for _ in range(CONNECTIONS)]
    monkeypatch.setattr(FrameReader, "feed", counted)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 983_040) + os.urandom(4)  # a 960 KiB binary frame's header
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for ws in sockets:
            ws.send_raw(header)
        await asyncio.wait_for(all_fed.wait(), 10)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        for ws in sockets:
            ws.reset()
    # before: 32 x 960 KiB (30 MiB) for 32 x 14 bytes
    assert held < LENT_BYTES + (4 << 20), f"the engine holds {held} bytes for {CONNECTIONS} frame headers"
