"""A stream client's writer lets go of each frame once it is written.

Before, the writer kept the last frame it wrote until the next one came: a client that read its sync and then
had nothing to receive (a quiet group) held that sync's bytes for as long as it stayed connected, outside any
budget (a sync is one frame per join, not shared with other clients): 10,000 idle clients that each joined a
4 MiB group held 40 GB with every queue empty.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest

from iii_engine.modules.stream import socket as stream_socket


class _Peer:
    remote_address = ("127.0.0.1", 1)


async def test_an_idle_client_holds_no_frame_it_was_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[int] = []
    sent = asyncio.Event()

    async def send(ws: Any, text: bool, frame: bytes) -> None:
        written.append(len(frame))
        sent.set()

    monkeypatch.setattr(stream_socket, "send_server_frame", send)
    client = stream_socket._Client(_Peer(), None, 16, 1.0, 1 << 20)  # type: ignore[arg-type]
    writer = asyncio.get_running_loop().create_task(client.write())
    try:
        sync = os.urandom(64 * 1024)  # a frame of this client's own, as a sync is
        before = sys.getrefcount(sync)
        client.offer(sync)
        await sent.wait()  # the writer ran on to wait for its next frame before this test resumed
        after = sys.getrefcount(sync)
        assert written == [len(sync)] and client.queue.empty() and not writer.done()
        assert after == before, "the writer still holds the frame it wrote"
    finally:
        writer.cancel()
