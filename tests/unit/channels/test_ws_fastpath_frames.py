"""Large frames in iii.ws_fastpath: the frame reader's own buffer per large frame (and reads straight into it),
its bound on what a header alone makes it allocate, and large payloads written without being joined."""

from __future__ import annotations

import os
import random
import tracemalloc
from typing import Any

import pytest

from iii.channel_end import invited_frame_size
from iii.ws_fastpath import FLUSH_BYTES, FrameReader, _FastReceive, client_frame, server_frame

KEY = b"\x01\x02\x03\x04"
PING = b"\x89\x00"
CLOSE = b"\x88\x02\x03\xe8"


def _stream(masked: bool, sizes: list[int]) -> tuple[bytes, list[tuple[bool, bytes]]]:
    frames: list[bytes] = []
    messages: list[tuple[bool, bytes]] = []
    for n, size in enumerate(sizes):
        payload = os.urandom(size)
        frames.append(client_frame(False, payload, KEY) if masked else server_frame(False, payload))
        messages.append((False, payload))
        if n == 1:
            frames.append(b"\x89\x80" + KEY if masked else PING)  # a ping between data frames
    return b"".join(frames), messages


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_large_frames_split_anywhere_fed_or_received_straight_into_their_buffer(masked: bool, seed: int) -> None:
    rng = random.Random(seed)
    data, expected = _stream(masked, [1024 * 1024, 983040, 300_000, 70_000, 5, 1024 * 1024])
    close = b"\x88\x82" + KEY + bytes(a ^ b for a, b in zip(b"\x03\xe8", KEY, strict=False)) if masked else CLOSE
    data += close
    reader = FrameReader(masked=masked)
    messages: list[tuple[bool, bytes]] = []
    control: list[bytes] = []
    rest = None
    at = direct = 0
    while at < len(data) and rest is None:
        n = rng.choice((1, 3, 13, 1000, 65536, 200_000, 1 << 20))
        target = reader.receive_buffer()
        if target is not None:  # what the buffered transport does: read into the frame's own buffer
            n = min(n, len(target), len(data) - at)
            target[:n] = data[at : at + n]
            got = reader.received(n)
            direct += 1
        else:
            scratch = bytearray(data[at : at + n])  # a reused buffer: overwritten after the call
            got = reader.feed(memoryview(scratch))
            n = len(scratch)
            scratch[:] = b"\xff" * n
        messages += got[0]
        control += got[1]
        rest = got[2]
        at += n
    assert messages == expected
    assert len(control) == 1
    # What websockets gets: the handed-over rest, then every byte after it (a large frame's tail is read up to its
    # end, so the Close may come in a read of its own, split anywhere).
    assert rest is not None
    handed = rest + data[at:]
    assert data.endswith(handed) and handed.startswith(close)
    assert direct > 0


def test_a_header_alone_never_makes_the_reader_allocate_the_frame() -> None:
    # No size limit (our SDK's client side): a frame announced as 60 MiB is held as its bytes come, not at once.
    header = server_frame(False, b"")[:1] + b"\x7f" + (60 << 20).to_bytes(8, "big")
    reader = FrameReader(masked=False)
    tracemalloc.start()
    try:
        reader.feed(header + b"x" * 1000)
        assert reader.receive_buffer() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_what_a_frame_leaves_behind_is_at_most_one_invited_frame_buffer() -> None:
    # A thread keeps the buffer of its last large frame for the next one of that size, but never one larger than
    # an invited frame (no size limit here: the 3 MiB frame is legal, and its buffer must go with it).
    payload = os.urandom(3 << 20)
    frame = server_frame(False, payload)
    tracemalloc.start()
    try:
        reader = FrameReader(masked=False)
        before, _ = tracemalloc.get_traced_memory()
        got = []
        for at in range(0, len(frame), 100_000):
            got += reader.feed(frame[at : at + 100_000])[0]
        assert got == [(False, payload)]
        del got
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024


def test_an_invited_frame_gets_its_buffer_at_once() -> None:
    payload = os.urandom(983040)
    frame = client_frame(False, payload, KEY)
    reader = FrameReader(masked=True)
    assert reader.feed(frame[:100]) == ([], [], None)
    target = reader.receive_buffer()
    assert target is not None and len(target) == len(frame) - 100
    target[:] = frame[100:]
    assert reader.received(len(target)) == ([(False, payload)], [], None)
    assert reader.receive_buffer() is None


class _Transport:
    def __init__(self) -> None:
        self.writes: list[Any] = []

    def write(self, data: Any) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


class _Corked(_FastReceive):
    def __init__(self) -> None:
        self._fast_setup(0)
        self.transport = _Transport()  # type: ignore[assignment]


async def test_a_large_payload_is_written_as_it_is_after_what_was_corked() -> None:
    conn = _Corked()
    big = os.urandom(FLUSH_BYTES)
    conn.cork((b"h1", b"small"))
    conn.cork((b"h2", big))
    writes = conn.transport.writes  # type: ignore[attr-defined]
    # The payload itself, as a view (a partial send's rest is then sliced without a copy): not joined, not copied.
    assert writes[0] == b"h1smallh2" and isinstance(writes[1], memoryview) and writes[1].obj is big
    conn.cork((b"h3", b"tail"))
    assert len(writes) == 2  # small parts wait for the end of the loop turn (or the next large part)
    conn.flush_out()
    assert writes[2:] == [b"h3tail"]


def test_the_invitation_needs_exactly_one_well_formed_value() -> None:
    assert invited_frame_size(["262144", "262144"]) == 64 * 1024
    assert invited_frame_size(["-5"]) == invited_frame_size([""]) == invited_frame_size(["0x100000"]) == 64 * 1024
    assert invited_frame_size(["1" * 40]) == 64 * 1024
    assert invited_frame_size(["1048576"]) == 1024 * 1024
