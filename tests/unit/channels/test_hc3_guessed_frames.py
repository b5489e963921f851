"""A fast channel socket reads the next frame, header and payload, in one read straight into a spare buffer of the
size the frame before the last had (iii.ws_fastpath.FrameReader.next_frame_buffer): one system call per frame,
not two, while writes of one size flow; a wrong guess loses, reorders and keeps nothing, and a guess never allocates.
A large frame the relay sends leaves with its header in one system call."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest

from iii import ws_fastpath
from iii.ws_fastpath import FrameReader, _BufferedFeed, client_frame, server_frame

KEY = b"\x05\x06\x07\x08"
INVITED = 983040  # the engine's invitation: a 1 MiB write goes as 960 KiB and a 64 KiB tail


class _Conn:
    """What a fast connection does with a read (:meth:`_FastReceive._feed` / ``_feed_direct``), kept for checks."""

    def __init__(self, frames: FrameReader) -> None:
        self.frames = frames
        self.messages: list[tuple[bool, bytes]] = []
        self.control: list[bytes] = []
        self.rest: bytes | None = None

    def _feed(self, data: memoryview) -> None:
        self._got(*self.frames.feed(data))

    def _feed_direct(self, nbytes: int) -> None:
        self._got(*self.frames.received(nbytes))

    def _got(self, messages: list[tuple[bool, bytes]], control: list[bytes], rest: bytes | None) -> None:
        self.messages += messages
        self.control += control
        self.rest = rest


def _frames(masked: bool, payloads: list[bytes]) -> bytes:
    return b"".join(client_frame(False, p, KEY) if masked else server_frame(False, p) for p in payloads)


def _read(masked: bool, data: bytes, rng: random.Random | None = None) -> tuple[_Conn, int]:
    """Feed ``data`` the way a buffered transport does (``get_buffer``, a read of at most that much, then
    ``buffer_updated``); the socket holds all of it unless ``rng`` cuts reads short. The connection and the reads."""
    conn = _Conn(FrameReader(masked=masked))
    feed = _BufferedFeed(conn, conn.frames)  # type: ignore[arg-type]
    at = reads = 0
    while at < len(data) and conn.rest is None:
        buf = feed.get_buffer(-1)
        n = min(len(buf), len(data) - at)
        if rng is not None:
            n = min(n, rng.choice((1, 7, 14, 1000, 65536, 300_000, 1 << 20)))
        buf[:n] = data[at : at + n]
        shared = not feed._direct  # the thread's receive buffer, not a frame's own
        feed.buffer_updated(n)
        if shared:
            buf[:n] = b"\xee" * n  # the next read lands there: nothing kept may change
        at += n
        reads += 1
    return conn, reads


@pytest.fixture(autouse=True)
def _no_spares() -> None:
    """Each test starts without this thread's spare frame buffers and with a fresh receive buffer (other tests
    leave theirs)."""
    vars(ws_fastpath._SPARE).clear()
    vars(ws_fastpath._RECEIVE).pop("view", None)


@pytest.mark.parametrize("masked", [True, False], ids=["relay", "reader"])
def test_a_repeating_write_pattern_takes_one_read_per_frame(masked: bool) -> None:
    # 1 MiB writes through an invited writer: 960 KiB, 64 KiB, 960 KiB, ... Before, each frame took a read of its
    # header alone and one of its payload (48 reads for these 24 frames).
    payloads = [os.urandom(size) for _ in range(12) for size in (INVITED, 65536)]
    conn, reads = _read(masked, _frames(masked, payloads))
    assert conn.messages == [(False, p) for p in payloads]
    assert reads <= len(payloads) + 6  # the first frames, before there is a spare to guess with


@pytest.mark.parametrize("masked", [True, False], ids=["relay", "reader"])
@pytest.mark.parametrize("seed", range(6))
def test_wrong_guesses_lose_reorder_and_keep_nothing(masked: bool, seed: int) -> None:
    rng = random.Random(seed)
    sizes = [INVITED, 65536, INVITED, 65536, 70_000, INVITED - 1, INVITED + 1, 300_000, 65536, 5, INVITED,
             1 << 20, 16_000, 20_000, 65536, INVITED]
    rng.shuffle(sizes)
    payloads = [rng.randbytes(size) for size in sizes]
    ping = b"\x89\x80" + KEY if masked else b"\x89\x00"
    close = b"\x88\x80" + KEY if masked else b"\x88\x00"
    data = _frames(masked, payloads[:9]) + ping + _frames(masked, payloads[9:]) + close
    conn, _ = _read(masked, data, rng)
    assert conn.messages == [(False, p) for p in payloads]
    assert conn.control == [ping]
    assert conn.rest is not None and conn.rest.startswith(close)
    assert isinstance(conn.rest, bytes)


def test_a_guess_takes_only_a_spare_and_gives_it_back_when_wrong() -> None:
    payload = os.urandom(INVITED)
    conn, _ = _read(True, _frames(True, [payload, payload, payload]))
    reader = conn.frames
    assert reader.next_frame_buffer() is not None  # between frames: the spare of the frame before the last
    spares = ws_fastpath._SPARE.buffers
    assert spares == []  # it took the thread's only one
    # A frame of another size comes instead: split like any read, and the buffer goes back to the spares.
    other = client_frame(False, b"x" * 70_000, KEY)
    guess = reader.next_frame_buffer()
    assert guess is not None
    guess[: len(other)] = other
    assert reader.received(len(other)) == ([(False, b"x" * 70_000)], [], None)
    assert [len(b) for b in spares] == [len(_frames(True, [payload]))]
    # No spare of the guessed size: no guess (a header alone never makes the reader allocate a frame).
    spares.clear()
    assert reader.next_frame_buffer() is None


class _Corked(ws_fastpath._Corked):
    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._cork_setup()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, "the peer closed early"
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("small_first", [False, True])
async def test_a_large_frame_leaves_with_its_header_and_what_was_corked_in_one_send(small_first: bool) -> None:
    # The relay's large frames: before, the corked header went out in a send of its own (and a TCP segment the
    # reader woke up for), then the payload. Now one sendmsg carries both; what the socket does not take goes to
    # the transport as views of the payload, in order.
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=ours)
    writes: list[object] = []
    write = transport.write

    def spy(data: bytes | memoryview) -> None:
        writes.append(data)
        write(data)

    transport.write = spy  # type: ignore[method-assign]
    conn = _Corked(transport)  # type: ignore[arg-type]
    big = os.urandom(4 * ws_fastpath.FLUSH_BYTES)  # more than the socket takes at once: a partial send
    if small_first:
        conn.cork((b"h1", b"small"))
    conn.cork((b"h2", big))
    expected = (b"h1small" if small_first else b"") + b"h2" + big
    got = await asyncio.to_thread(_read_exactly, peer, len(expected))
    assert got == expected
    assert writes and all(isinstance(w, memoryview) and w.obj is big for w in writes)
    transport.close()
    peer.close()


async def test_a_transport_still_sending_keeps_its_order() -> None:
    # With bytes waiting in the transport, the frame goes behind them through the transport as before.
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=ours)
    conn = _Corked(transport)  # type: ignore[arg-type]
    first = os.urandom(4 * ws_fastpath.FLUSH_BYTES)
    transport.write(first)
    assert transport.get_write_buffer_size()
    big = os.urandom(ws_fastpath.FLUSH_BYTES)
    conn.cork((b"hx", big))
    got = await asyncio.to_thread(_read_exactly, peer, len(first) + 2 + len(big))
    assert got == first + b"hx" + big
    transport.close()
    peer.close()
