"""The channel writer's large frames (iii.ws_fastpath): masked and written in segments of at most MASK_SEGMENT (an
invited frame whole), handed to the transport as views, and with the same bytes on the wire as one joined frame
(websockets' own parser checks them)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from iii import channels, ws_fastpath
from iii.ws_fastpath import FastClientConnection

MASK_SEGMENT: int = getattr(ws_fastpath, "MASK_SEGMENT", 256 * 1024)

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


async def test_large_frames_go_out_in_segments_as_views_with_the_same_messages() -> None:
    received: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:  # websockets parses and unmasks: any wrong byte would fail the connection
            assert isinstance(message, bytes)
            received.append(message)

    data = os.urandom(3 * 1024 * 1024 + 12345)
    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}",
            create_connection=FastClientConnection,
            write_limit=channels._CONNECT_OPTIONS["write_limit"],
            **OPTS,
        )
        writes: list[tuple[type, int]] = []
        write = ws.transport.write
        in_sendmsg = False

        def spy(part: bytes | memoryview) -> None:
            if not in_sendmsg:  # (the rest of a partial sendmsg: counted there)
                writes.append((type(part), len(part)))
            write(part)

        ws.transport.write = spy  # type: ignore[method-assign,assignment]
        with_corked = ws._send_with_corked  # type: ignore[attr-defined]
        sendmsgs: list[list[int]] = []

        def spy_with_corked(*parts: bytes) -> bool:
            nonlocal in_sendmsg
            in_sendmsg = True
            try:
                sent: bool = with_corked(*parts)
            finally:
                in_sendmsg = False
            if sent:
                sendmsgs.append([len(part) for part in parts])
            return sent

        ws._send_with_corked = spy_with_corked  # type: ignore[attr-defined]
        await ws_fastpath.send_data(ws, data, frame_size=1024 * 1024)
        await ws.close()
    # One message per frame, in order, byte for byte.
    assert [len(m) for m in received] == [1024 * 1024] * 3 + [12345]
    assert hashlib.sha256(b"".join(received)).digest() == hashlib.sha256(data).digest()
    # The masked payload leaves in segments of at most MASK_SEGMENT, and as views (a partial send's rest is then
    # copied once, not sliced into a second copy first).
    assert max(size for _, size in writes) <= MASK_SEGMENT
    # A frame's header leaves with its first segment (in one sendmsg when the socket is idle, as it is here most
    # of the time), the other segments as views.
    segments = [size for _, size in writes if size == MASK_SEGMENT] + [parts[1] for parts in sendmsgs]
    assert segments == [MASK_SEGMENT] * (3 * 1024 * 1024 // MASK_SEGMENT)
    assert all(kind is memoryview for kind, size in writes if size == MASK_SEGMENT)
    assert all(parts == [14, MASK_SEGMENT] for parts in sendmsgs) and sendmsgs


async def test_a_channel_writer_waits_for_its_transport_buffer_to_empty() -> None:
    # The kernel's socket buffer is the queue: a frame is handed over only once the transport's own buffer is
    # empty, so the rest of a partial send is not joined by the next frame's bytes (one more copy of each).
    assert channels._CONNECT_OPTIONS["write_limit"] == (0, 0)


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


async def test_a_corked_large_part_goes_to_the_transport_as_a_view() -> None:
    # The relay's large payloads: the transport slices what the socket does not take; a view's slice is free.
    corked = ws_fastpath._Corked()
    corked.transport = _Transport()  # type: ignore[assignment]
    corked._cork_setup()
    payload = os.urandom(ws_fastpath.FLUSH_BYTES)
    corked.cork((b"head", payload))
    corked.flush_out()
    writes = corked.transport.writes  # type: ignore[attr-defined]
    assert [bytes(w) for w in writes] == [b"head", payload]
    assert isinstance(writes[1], memoryview)


async def test_small_frames_are_corked_unjoined_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 KiB frames (a writer the engine does not invite to send larger ones): header and masked payload go to the
    # cork apart (each frame was once joined first), FLUSH_BYTES of frames per call and flow-control wait (were one
    # of each per frame; measured, Python per frame besides masking: 1.8 us before, 1.2 after).
    corked: list[int] = []
    cork = ws_fastpath._Corked.cork

    def spy(self: ws_fastpath._Corked, parts: tuple[bytes, ...]) -> None:
        corked.append(len(parts))
        cork(self, parts)

    monkeypatch.setattr(ws_fastpath._Corked, "cork", spy)
    received: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            assert isinstance(message, bytes)
            received.append(message)

    data = os.urandom(1024 * 1024 + 7)
    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}",
            create_connection=FastClientConnection,
            write_limit=channels._CONNECT_OPTIONS["write_limit"],
            **OPTS,
        )
        await ws_fastpath.send_data(ws, data, frame_size=64 * 1024)
        await ws.close()
    assert b"".join(received) == data and len(received) == 17
    assert ws_fastpath.FLUSH_BYTES == 4 * 64 * 1024
    assert corked == [8, 8, 8, 8, 2]


async def test_corked_frames_leave_as_a_view() -> None:
    corked = ws_fastpath._Corked()
    corked.transport = _Transport()  # type: ignore[assignment]
    corked._cork_setup()
    corked.cork((b"h1", b"one"))
    corked.cork((b"h2", b"two"))
    corked.flush_out()
    writes = corked.transport.writes  # type: ignore[attr-defined]
    assert len(writes) == 1 and isinstance(writes[0], memoryview) and bytes(writes[0]) == b"h1oneh2two"
