"""Attacks on the large-frame buffers of :class:`iii.ws_fastpath.FrameReader` (frame-size extension, 1ec746a)."""

from __future__ import annotations

import gc
import os
import struct
import threading
import tracemalloc

from iii.ws_fastpath import FRAME_BUFFER, LENT_BYTES, FrameReader


def _masked_header(length: int) -> bytes:
    return struct.pack("!BBQ", 0x82, 0x80 | 127, length) + os.urandom(4)


def _masked_frame(payload: bytes) -> bytes:
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload[:64])) + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload[64:], start=64))
    return struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + key + masked


def _hold_headers(count: int) -> tuple[list[FrameReader], int]:
    """``count`` readers (connections) each fed only a 1 MiB frame's 14-byte header; the bytes they hold."""
    readers = [FrameReader(masked=True, max_size=4 << 20) for _ in range(count)]
    header = _masked_header(FRAME_BUFFER - 14)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for reader in readers:
            assert reader.feed(header) == ([], [], None)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return readers, held


def test_frame_headers_alone_on_many_connections_allocate_a_bounded_total() -> None:
    """A peer that opens connections and sends only a 1 MiB frame's 14-byte header on each must not make the
    engine hold 1 MiB per connection (before: a zeroed buffer of the frame's size per header, 64 MiB for these
    64); and what was lent comes back when those connections go away."""
    def run() -> None:
        readers, held = _hold_headers(64)
        results.append(held)
        del readers
        gc.collect()
        results.append(_hold_headers(1)[1])  # a reader of a later connection gets its frame's buffer at once

    results: list[int] = []
    thread = threading.Thread(target=run)  # a thread of its own: its own spare and loans
    thread.start()
    thread.join(30)
    assert len(results) == 2
    held, later = results
    assert held < LENT_BYTES + (1 << 20), f"{held} bytes held for 64 headers of 14 bytes"
    assert later >= FRAME_BUFFER


def test_frames_of_one_size_still_reuse_the_thread_buffer_and_read_directly() -> None:
    """After one large frame, the next of its size is received straight into a buffer of its exact size."""
    payload = os.urandom(900 * 1024)
    frame = _masked_frame(payload)

    used: list[bool] = []

    def run() -> None:
        reader = FrameReader(masked=True, max_size=4 << 20)
        for _ in range(3):
            messages, control, rest = reader.feed(frame[:20])
            assert (messages, control, rest) == ([], [], None)
            direct = reader.receive_buffer()
            if direct is None:  # the first frame of this thread: grows with its bytes
                messages, _, _ = reader.feed(frame[20:])
            else:
                assert len(direct) == len(frame) - 20
                direct[:] = frame[20:]
                messages, _, _ = reader.received(len(frame) - 20)
            assert messages == [(False, payload)]
            used.append(direct is not None)
        assert reader.receive_buffer() is None

    thread = threading.Thread(target=run)  # a thread of its own: no spare left by other tests
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert used[1:] == [True, True]  # the first may grow with its bytes (no spare of its size yet)
