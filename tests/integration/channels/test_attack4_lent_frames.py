"""Attack on 2d29d05's frame-buffer loans: connections to our engine that send a large frame's header and then
drop must give their loans (and the buffers) back when they close, not when the garbage collector finds them."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.chaos.common import RawWebSocket
from iii import ws_fastpath
from iii.ws_fastpath import FrameReader
from iii_engine import Engine

pytestmark = pytest.mark.our_engine("reads the engine's frame readers in-process")


def _lent() -> int:
    readers = getattr(ws_fastpath._LENT, "readers", None)
    return 0 if readers is None else len(readers)


async def test_a_connection_dropped_mid_frame_repays_its_loan(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, no_gc: None) -> None:
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
    sockets = [await RawWebSocket.connect(url.port, drain=False) for _ in range(count)]
    monkeypatch.setattr(FrameReader, "feed", counted_feed)
    monkeypatch.setattr(ws_fastpath._FastReceive, "connection_lost", counted_lost)
    lent_before = _lent()
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 983_040) + os.urandom(4)  # a 960 KiB binary frame's header
    for ws in sockets:
        ws.send_raw(header)
    await asyncio.wait_for(all_fed.wait(), 10)
    assert _lent() == lent_before + count  # each got a 960 KiB buffer on loan
    for ws in sockets:
        ws.reset()  # gone mid-frame
    await asyncio.wait_for(all_lost.wait(), 10)
    assert _lent() == lent_before, "connections gone mid-frame still hold their loans"
