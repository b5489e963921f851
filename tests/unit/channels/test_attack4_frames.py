"""Attack on 2d29d05's frame-buffer rule: "a peer that sent a quarter of the frame's size on this connection gets
its buffer" counted every byte the connection ever carried, so headers on connections with some earlier traffic
made the thread allocate a frame's buffer each again. A buffer is earned by a quarter of the frame in progress."""

from __future__ import annotations

import os
import struct
import threading
import tracemalloc
from collections.abc import Callable

from iii.ws_fastpath import FRAME_BUFFER, LENT_BYTES, FrameReader

CONNECTIONS = 64


def _masked(payload: bytes) -> bytes:
    return struct.pack("!BBH", 0x82, 0x80 | 126, len(payload)) + bytes(4) + payload  # zero key: payload as is


def _in_thread(run: Callable[[], None]) -> None:
    """Run ``run`` on a thread of its own: its own spare buffer and loans, none left by other tests."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_earlier_traffic_does_not_earn_buffers_for_headers_alone() -> None:
    held: list[int] = []

    def run() -> None:
        readers = [FrameReader(masked=True, max_size=4 << 20) for _ in range(CONNECTIONS)]
        small = _masked(b"x" * 60_000)
        for reader in readers:
            for _ in range(5):  # 300 KB of ordinary messages, read and gone
                messages, _, _ = reader.feed(small)
                assert len(messages) == 1
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, FRAME_BUFFER - 14) + os.urandom(4)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for reader in readers:
                assert reader.feed(header) == ([], [], None)
            held.append(tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()

    _in_thread(run)
    # before: 67,117,616 bytes (a 1 MiB buffer per 14-byte header)
    assert held[0] < LENT_BYTES + (1 << 20), f"{held[0]} bytes held for {CONNECTIONS} frame headers"


def test_a_quarter_of_the_frame_in_progress_earns_its_buffer() -> None:
    """Past the loans, a frame whose peer sent a quarter of it gets its exact buffer (received straight into)."""
    views: list[bool] = []

    def run() -> None:
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, FRAME_BUFFER - 14) + bytes(4)
        lenders = [FrameReader(masked=True, max_size=4 << 20) for _ in range(LENT_BYTES // FRAME_BUFFER)]
        for reader in lenders:  # the thread's loans, all taken
            reader.feed(header)
        reader = FrameReader(masked=True, max_size=4 << 20)
        reader.feed(header)
        views.append(reader.receive_buffer() is not None)  # a header alone: grows with its bytes
        quarter = (FRAME_BUFFER + 3) // 4
        reader.feed(bytes(quarter - len(header)))
        view = reader.receive_buffer()
        views.append(view is not None)
        assert view is not None
        view[:] = bytes(len(view))
        messages, _, _ = reader.received(len(view))
        assert messages == [(False, bytes(FRAME_BUFFER - 14))]

    _in_thread(run)
    assert views == [False, True]
