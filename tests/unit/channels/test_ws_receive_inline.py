"""FrameReader's inline path for common data frames (iii.ws_fastpath.FrameReader.feed), checked against websockets'
own parser: random streams of text/binary frames of every header length, pings among them and, at the end, a frame
the reader must hand over (Close, a fragment, reserved bits, the wrong mask bit, a message over max_size), fed in
random pieces from a reused buffer. The messages must be websockets' byte for byte, pings passed on raw, and the
handed-over bytes must start exactly at the frame the reader does not handle."""

from __future__ import annotations

import os
import random
import struct

import pytest
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from iii.ws_fastpath import FrameReader, client_frame, server_frame

MAX_SIZE = 70_000
SIZES = (0, 1, 5, 7, 8, 125, 126, 127, 1000, 65535, 65536, 69_999, MAX_SIZE)


def _frame(masked: bool, first: int, payload: bytes, *, mask_bit: bool | None = None) -> bytes:
    """A frame with first byte ``first`` (FIN, reserved bits, opcode), masked when the direction wants it."""
    size = len(payload)
    with_mask = masked if mask_bit is None else mask_bit
    bit = 0x80 if with_mask else 0
    if size < 126:
        head = struct.pack("!BB", first, bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not with_mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _data_frame(masked: bool, text: bool, payload: bytes) -> bytes:
    if masked:
        return client_frame(text, payload, os.urandom(4))
    return server_frame(text, payload)


BAD = {
    "close": lambda masked: _frame(masked, 0x88, b"\x03\xe8"),
    "fragment": lambda masked: _frame(masked, 0x02, b"part"),
    "reserved bit": lambda masked: _frame(masked, 0xC2, b"rsv1"),
    "wrong mask bit": lambda masked: _frame(masked, 0x82, b"mask", mask_bit=not masked),
    "over max_size": lambda masked: _frame(masked, 0x82, bytes(MAX_SIZE + 1)),
}


def _websockets_messages(masked: bool, data: bytes) -> list[tuple[bool, bytes]]:
    """The data messages websockets itself parses out of ``data`` (the side that reads this direction)."""
    protocol = Protocol(Side.SERVER if masked else Side.CLIENT, state=State.OPEN, max_size=None)
    protocol.receive_data(data)
    return [(frame.opcode is Opcode.TEXT, bytes(frame.data)) for frame in protocol.events_received()
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY)]


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("seed", range(3))
def test_inline_path_matches_websockets_and_hands_over_at_the_right_byte(masked: bool, bad: str, seed: int) -> None:
    rng = random.Random(f"{masked}-{bad}-{seed}")
    frames: list[bytes] = []
    pings: list[bytes] = []
    for _ in range(40):
        if rng.random() < 0.1:
            ping = _frame(masked, 0x89, os.urandom(rng.choice((0, 3, 125))))
            frames.append(ping)
            pings.append(ping)
            continue
        size = rng.choice(SIZES)
        frames.append(_data_frame(masked, rng.random() < 0.3, os.urandom(size)))
    good = b"".join(frames)
    tail = BAD[bad](masked) + _data_frame(masked, False, b"after the handover")
    data = good + tail

    reader = FrameReader(masked=masked, max_size=MAX_SIZE)
    messages: list[tuple[bool, bytes]] = []
    control: list[bytes] = []
    rest: bytes | None = None
    at = 0
    while at < len(data) and rest is None:
        n = rng.choice((1, 2, 9, 13, 14, 15, 200, 4096, 65536, 1 << 20))
        target = reader.receive_buffer()
        if target is not None:  # a large frame's own buffer, as the buffered transport reads it
            n = min(n, len(target), len(data) - at)
            target[:n] = data[at : at + n]
            got = reader.received(n)
        else:
            scratch = bytearray(data[at : at + n])  # the thread's reused receive buffer: overwritten afterwards
            n = len(scratch)
            got = reader.feed(memoryview(scratch))
            scratch[:] = b"\xaa" * n
        messages += got[0]
        control += got[1]
        rest = got[2]
        at += n
    assert rest is not None, "the reader never handed over"
    handed = rest + data[at:]
    assert handed == tail, f"handed over from the wrong byte ({len(handed)} bytes, expected {len(tail)})"
    assert messages == _websockets_messages(masked, good)
    assert control == pings
    assert reader.done


@pytest.mark.parametrize("masked", [True, False])
def test_many_small_frames_in_one_read_each_come_out_whole(masked: bool) -> None:
    """The control socket's case: hundreds of small frames in one read, the last ones shorter than a header."""
    payloads = [os.urandom(i % 40) for i in range(500)]
    data = b"".join(_data_frame(masked, i % 2 == 0, p) for i, p in enumerate(payloads))
    messages, control, rest = FrameReader(masked=masked).feed(memoryview(bytearray(data)))
    assert (control, rest) == ([], None)
    assert messages == [(i % 2 == 0, p) for i, p in enumerate(payloads)]
