"""Attack on today's channel receive path (e5e13a8, f82e278: reads stop at frame boundaries while large frames flow,
a large payload is read straight into its frame's own buffer, two spare large buffers per thread and a small one)
and on channels.max_open (7ed544d).

The receive path is driven here the way :class:`iii.ws_fastpath._BufferedFeed` drives it (``receive_buffer``, else
the thread's receive buffer cut to ``read_limit``, then ``received``/``feed``), with reads of every awkward size, a
receive buffer scribbled over after every read (nothing may keep a view of it), and the frame boundaries, lengths,
mask bytes and control frames that matter. Guards: they pass before and after today's work."""

from __future__ import annotations

import ast
import asyncio
import inspect
import itertools
import os
import random
import struct
import threading

import pytest
from websockets.utils import apply_mask

from iii import ws_fastpath
from iii.ws_fastpath import FLUSH_BYTES, FRAME_BUFFER, FrameReader
from iii_engine.channels import ChannelRelay, TooManyChannels, limits

Messages = list[tuple[bool, bytes]]


def _frame(masked: bool, opcode: int, payload: bytes, key: bytes, fin: bool = True) -> bytes:
    """An RFC 6455 frame built here, not with the module under test."""
    b0 = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head = bytes((b0, bit | size))
    elif size < 65536:
        head = struct.pack("!BBH", b0, bit | 126, size)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, size)
    return head + key + apply_mask(payload, key) if masked else head + payload


class _Reads:
    """Feeds a stream to a :class:`FrameReader` as the buffered transport would: ``sizes`` are what the "kernel"
    hands over per read (cycled), bounded by ``receive_buffer`` / ``read_limit``, and no read crosses ``stop_at``
    (one ends there exactly, however the reader bounds the reads before it). ``ends`` lists where reads ended."""

    def __init__(self, reader: FrameReader, sizes: list[int], stop_at: int = 0,
                 receive: bytearray | None = None) -> None:
        self.reader = reader
        self.sizes = sizes
        self.stop_at = stop_at
        # A caller running many cases passes one buffer: a fresh MiB per case cost more than the reader's work.
        self.receive = bytearray(1 << 20) if receive is None else receive
        self.ends: list[int] = []

    def run(self, stream: bytes) -> tuple[Messages, list[bytes], bytes | None]:
        messages: Messages = []
        control: list[bytes] = []
        rest: bytes | None = None
        at = turn = 0
        # Views, not slices: copying the stream for every read was most of this harness's time.
        source = memoryview(stream)
        while at < len(stream) and rest is None:
            most = min(self.sizes[turn % len(self.sizes)], len(stream) - at)
            if at < self.stop_at:
                most = min(most, self.stop_at - at)
            turn += 1
            direct = self.reader.receive_buffer()
            if direct is not None:
                size = min(len(direct), most)
                direct[:size] = source[at : at + size]
                del direct
                got, ctl, rest = self.reader.received(size)
            else:
                limit = self.reader.read_limit()
                size = min(limit or len(self.receive), most)
                self.receive[:size] = source[at : at + size]
                got, ctl, rest = self.reader.feed(memoryview(self.receive)[:size])
                # The next read overwrites it; the two fills alternate, so a view kept from the previous read
                # shows neither its bytes nor this read's.
                self.receive[:size] = _SCRIBBLE[turn % 2][:size]
            at += size
            self.ends.append(at)
            messages += got
            control += ctl
        if rest is not None:
            rest += stream[at:]
        return messages, control, rest


_SCRIBBLE = (memoryview(b"\xa5" * (2 << 20)), memoryview(b"\x5a" * (2 << 20)))


_SIZES = [0, 1, 2, 125, 126, 127, 65535, 65536, 65537, FLUSH_BYTES - 1, FLUSH_BYTES, FLUSH_BYTES + 1,
          FRAME_BUFFER - 15, FRAME_BUFFER - 14, FRAME_BUFFER - 13, FRAME_BUFFER - 10, FRAME_BUFFER - 9, FRAME_BUFFER,
          983040, 1 << 20, (1 << 20) + 1, 3 << 20]


def _case(rng: random.Random, masked: bool) -> tuple[bytes, Messages, list[bytes], bytes | None]:
    """A random stream of data and control frames, possibly ending in what the reader hands over (a Close or a
    fragmented message, with more frames after it); what must come out of it."""
    stream = bytearray()
    messages: Messages = []
    control: list[bytes] = []
    rest: bytes | None = None
    for _ in range(rng.randrange(1, 7)):
        key = rng.randbytes(4)
        pick = rng.random()
        if pick < 0.15:
            ping = _frame(masked, rng.choice((9, 10)), rng.randbytes(rng.choice((0, 1, 125))), key)
            stream += ping
            control.append(ping)
        elif pick < 0.2:
            rest = _frame(masked, 8, struct.pack("!H", 1000), key) + _frame(masked, 2, b"after", key)
            break
        elif pick < 0.25:  # a fragmented message, a ping between its fragments: websockets' job
            rest = (_frame(masked, 2, rng.randbytes(rng.choice((0, 300, 70000))), key, fin=False)
                    + _frame(masked, 9, b"p", key) + _frame(masked, 0, b"x", key))
            break
        else:
            size = rng.choice(_SIZES) if rng.random() < 0.7 else rng.randrange(0, 2 << 20)
            text = size < 100_000 and rng.random() < 0.1
            payload = rng.randbytes(size)
            stream += _frame(masked, 1 if text else 2, payload, key)
            messages.append((text, payload))
    if rest is not None:
        stream += rest
    return bytes(stream), messages, control, rest


def _run_seeds(seeds: range) -> None:
    for seed in seeds:
        rng = random.Random(seed)
        masked = seed % 2 == 0
        stream, messages, control, rest = _case(rng, masked)
        sizes = [rng.choice((1, 2, 3, 7, 14, 100, 4096, 65536, 1 << 20)) for _ in range(7)]
        got = _Reads(FrameReader(masked=masked), sizes).run(stream)
        assert got[0] == messages, (seed, [len(p) for _, p in got[0]], [len(p) for _, p in messages])
        assert got[1] == control, seed
        assert got[2] == rest, seed


def test_random_streams_come_out_intact_in_reads_of_every_size() -> None:
    _run_seeds(range(120))


def test_readers_of_two_threads_and_of_one_thread_share_spares_without_mixing_frames() -> None:
    # Two threads each run many readers one after another (their spares go from frame to frame, reader to reader),
    # while the first thread interleaves two readers itself.
    errors: list[BaseException] = []

    def run(seeds: range) -> None:
        try:
            _run_seeds(seeds)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run, args=(range(1000, 1060),))
    thread.start()
    run(range(2000, 2060))
    thread.join()
    assert not errors, errors
    rng = random.Random(5)
    key = bytes((0xFF, 0x00, 0x80, 0x7F))
    payloads = [[rng.randbytes(n) for n in (983040, 65536, 1 << 20, 300)] for _ in range(2)]
    readers = [FrameReader(masked=True), FrameReader(masked=True)]
    streams = [b"".join(_frame(True, 2, p, key) for p in ps) for ps in payloads]
    got: list[list[bytes]] = [[], []]
    at = [0, 0]
    while any(at[i] < len(streams[i]) for i in (0, 1)):
        for i in (0, 1):  # one read each in turn: both readers hold frames in progress at once
            if at[i] >= len(streams[i]):
                continue
            direct = readers[i].receive_buffer()
            size = min(len(direct) if direct is not None else readers[i].read_limit() or 1 << 20, 100_000,
                       len(streams[i]) - at[i])
            if direct is not None:
                direct[:size] = streams[i][at[i] : at[i] + size]
                del direct
                messages, _, _ = readers[i].received(size)
            else:
                messages, _, _ = readers[i].feed(streams[i][at[i] : at[i] + size])
            got[i] += [p for _, p in messages]
            at[i] += size
    assert got == payloads


@pytest.mark.parametrize("masked", [True, False], ids=["server-reads-client", "client-reads-server"])
def test_frames_split_at_every_offset_near_each_boundary(masked: bool) -> None:
    rng = random.Random(1)
    key = bytes((0xFF, 0x00, 0x80, 0x7F))
    payloads = [rng.randbytes(n) for n in (0, 1, 125, 126, 65535, 65536, FLUSH_BYTES - 1, FLUSH_BYTES,
                                           FRAME_BUFFER - 14, FRAME_BUFFER - 10, 5)]
    frames = [_frame(masked, 2, p, key) for p in payloads]
    stream = b"".join(frames)
    bounds = [0]
    for frame in frames:
        bounds.append(bounds[-1] + len(frame))
    offsets = sorted({o for b in bounds for o in range(max(1, b - 15), min(len(stream), b + 15))})
    receive = bytearray(1 << 20)
    for first in offsets:
        for second in (1, 13, 14, 15, 1 << 20):
            # stop_at: past the first MiB a read of ``first`` bytes was cut to the receive buffer's size, so the
            # offsets near the later boundaries all made one same split nowhere near them.
            reads = _Reads(FrameReader(masked=masked), [first, second, 1 << 20], stop_at=first, receive=receive)
            got = reads.run(stream)
            assert [p for _, p in got[0]] == payloads and got[2] is None, (first, second)
            assert first in reads.ends, (first, second, reads.ends[:8])


def test_every_mask_byte_value_unmasks() -> None:
    payload = bytes(range(256)) * 1100  # 281,600 bytes: a large frame
    for value in range(256):
        key = bytes((value, 255 - value, value ^ 0x5A, (value * 7) % 256))
        stream = _frame(True, 2, payload, key) + _frame(True, 2, payload[:200], key)
        got = _Reads(FrameReader(masked=True), [14, 1 << 20]).run(stream)
        assert [p for _, p in got[0]] == [payload, payload[:200]], value


def test_each_constant_of_the_channel_limits_keeps_its_own_docstring() -> None:
    # 7ed544d put DEFAULT_MAX_OPEN_CHANNELS between DEFAULT_MAX_MESSAGE_SIZE and its docstring: the message size
    # lost its documentation and a second, orphan string followed the new constant's.
    body = ast.parse(inspect.getsource(limits)).body
    docs: dict[str, str] = {}
    for before, node in itertools.pairwise(body):
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
            isinstance(node.value.value, str)
        if not is_doc:
            continue
        assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        doc = node.value.value
        assert isinstance(doc, str)
        assert isinstance(before, ast.AnnAssign), f"orphan string in limits.py: {doc!r}"
        assert isinstance(before.target, ast.Name)
        docs[before.target.id] = doc
    assert "message" in docs["DEFAULT_MAX_MESSAGE_SIZE"].lower()
    assert "channels" in docs["DEFAULT_MAX_OPEN_CHANNELS"].lower()


async def test_a_channel_that_never_attaches_gives_its_slot_back_at_the_attach_timeout() -> None:
    relay = ChannelRelay(max_open=1, attach_timeout_s=0.05)
    relay.create(None, owner="w")
    with pytest.raises(TooManyChannels, match=r"channels.max_open 1"):
        relay.create(None, owner=None)
    await asyncio.wait_for(relay.wait_idle(), 5)  # the attach deadline forgot it
    relay.create(None, owner=None)
    await relay.close()


async def test_a_channel_refused_past_max_open_leaves_nothing_behind() -> None:
    relay = ChannelRelay(max_open=2, orphan_grace_s=0)
    for _ in range(2):
        relay.create(None, owner="w")
    for _ in range(50):
        with pytest.raises(TooManyChannels):
            relay.create(None, owner="w")
    assert len(relay) == 2 and len(relay._pending) == 2 and len(relay._by_owner["w"]) == 2
    relay.drop_owner("w")
    assert len(relay) == 0 and not relay._pending and not relay._by_owner
    await relay.close()


def test_spare_buffers_stay_bounded_per_thread() -> None:
    # Whatever sizes come, a thread keeps at most SPARE_BUFFERS large spares and one small one.
    reader = FrameReader(masked=False)
    for size in (FLUSH_BYTES, FLUSH_BYTES + 1, 983040, 1 << 20, FRAME_BUFFER - 10, 600_000, 100, 70_000):
        frame = _frame(False, 2, os.urandom(size), b"")
        assert reader.feed(frame[:10])[0] == []
        assert [p for _, p in reader.feed(frame[10:])[0]] == [frame[-size:] if size else b""]
        spares = getattr(ws_fastpath._SPARE, "buffers", [])
        assert len(spares) <= ws_fastpath.SPARE_BUFFERS
        assert all(FLUSH_BYTES <= len(b) <= FRAME_BUFFER for b in spares)
        small = getattr(ws_fastpath._SPARE, "small", None)
        assert small is None or len(small) < FLUSH_BYTES
