"""Receiving large frames (iii.ws_fastpath): while large frames flow, reads stop at frame boundaries, so each large
payload is read by the kernel straight into its frame's own buffer instead of into the receive buffer and then
copied over; a run of small frames goes back to reading as much as there is."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from iii.ws_fastpath import FastClientConnection, FrameReader

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


async def _receive_through_fed_bytes(monkeypatch: pytest.MonkeyPatch, sizes: list[int]) -> tuple[int, int]:
    """Send messages of ``sizes`` from a websockets server to a fast client; (bytes that went through
    FrameReader.feed, i.e. the receive buffer, total payload bytes). The messages must arrive intact."""
    fed = 0
    feed = FrameReader.feed

    def counting_feed(self: FrameReader, data: bytes | memoryview, *args: Any) -> Any:
        nonlocal fed
        fed += len(data)
        return feed(self, data, *args)

    monkeypatch.setattr(FrameReader, "feed", counting_feed)
    payloads = [os.urandom(size) for size in sizes]

    async def handler(ws: ServerConnection) -> None:
        for payload in payloads:
            await ws.send(payload)
        await ws.close()

    received: list[bytes] = []
    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await websockets.connect(f"ws://127.0.0.1:{port}", create_connection=FastClientConnection, **OPTS)
        try:
            while True:
                received.append((await ws_fastpath.receive(ws))[1])
        except websockets.ConnectionClosedOK:
            pass
    assert [hashlib.sha256(m).digest() for m in received] == [hashlib.sha256(p).digest() for p in payloads]
    return fed, sum(sizes)


async def test_large_frames_are_read_straight_into_their_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an SDK writer sends our engine for 1 MiB writes: a 960 KiB frame and a 64 KiB one, over and over.
    fed, total = await _receive_through_fed_bytes(monkeypatch, [983040, 65536] * 24)
    # Only headers and the small frames go through the receive buffer (before: most of each large payload too).
    assert fed < 0.1 * total, (fed, total)


async def test_small_frames_still_arrive_in_big_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # A large frame, then many small ones: reads go back to taking as much as there is (not one read per frame).
    reads = 0
    feed = FrameReader.feed

    def counting(self: FrameReader, data: bytes | memoryview, *args: Any) -> Any:
        nonlocal reads
        reads += 1
        return feed(self, data, *args)

    monkeypatch.setattr(FrameReader, "feed", counting)
    fed, _ = await _receive_through_fed_bytes(monkeypatch, [1 << 20] + [100] * 3000)
    assert fed >= 300_000
    assert reads < 1500, reads


def test_a_writer_and_a_reader_socket_in_one_thread_each_reuse_their_frame_buffer() -> None:
    # An in-process channel: the engine reads the writer's masked frames and the SDK reads the engine's, in one
    # thread, 960 KiB and 64 KiB frames alternately. Each large frame finds a spare buffer of its size (before:
    # one spare per thread, so the two sockets took turns evicting each other's and zeroed a fresh 1 MiB a frame).
    key = b"\x01\x02\x03\x04"
    engine, sdk = FrameReader(masked=True), FrameReader(masked=False)
    frames = {
        engine: [ws_fastpath.client_frame(False, os.urandom(n), key) for n in (983040, 65536)],
        sdk: [ws_fastpath.server_frame(False, os.urandom(n)) for n in (983040, 65536)],
    }
    buffers: dict[FrameReader, set[int]] = {engine: set(), sdk: set()}
    seen: list[bytearray] = []  # kept alive, so that no id is reused by a fresh buffer

    errors: list[BaseException] = []

    def run() -> None:
        try:
            feed_all()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    def feed_all() -> None:
        for _ in range(6):
            for reader in (engine, sdk):
                for frame in frames[reader]:
                    assert reader.feed(frame[:20]) == ([], [], None)
                    if len(frame) > 500_000:
                        buffers[reader].add(id(reader._pending))
                        seen.append(reader._pending)
                    messages, _, _ = reader.feed(frame[20:])
                    assert len(messages) == 1

    thread = threading.Thread(target=run)  # a thread of its own: its own spares and loans
    thread.start()
    thread.join()
    assert not errors, errors
    assert len(buffers[engine]) <= 2 and len(buffers[sdk]) <= 2, buffers
