"""A channel writer's frames leave in as few system calls as they can, unjoined: a large frame's header with its
first masked segment and whatever was corked before it in one ``sendmsg``; corked 64 KiB frames (a writer not
invited to send larger ones) as their parts in one ``sendmsg``, not joined into one copy first."""

from __future__ import annotations

import os
import socket
from typing import Any

from iii import ws_fastpath
from iii.ws_fastpath import apply_mask


class _SpySocket(socket.socket):
    """A real socket that records the parts of each ``sendmsg``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sendmsgs: list[list[int]] = []

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        parts = list(buffers)
        self.sendmsgs.append([len(part) for part in parts])
        return super().sendmsg(parts, *args)


class _Transport:
    """Enough of asyncio's socket transport for :class:`ws_fastpath._Corked`: its socket, an empty buffer, and
    ``write`` (recorded, then sent)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes: list[int] = []

    def write(self, data: bytes | memoryview) -> None:
        self.writes.append(len(data))
        self._sock.sendall(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _corked(sock: socket.socket) -> tuple[ws_fastpath._Corked, _Transport]:
    corked = ws_fastpath._Corked()
    transport = _Transport(sock)
    corked.transport = transport  # type: ignore[assignment]
    corked._cork_setup()
    return corked, transport


def _receive(peer: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        got += peer.recv(size - len(got))
    return bytes(got)


async def test_a_large_frame_leaves_with_its_header_and_what_was_corked_in_one_sendmsg() -> None:
    ours, peer = socket.socketpair()
    spy = _SpySocket(fileno=ours.detach())
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    try:
        corked, transport = _corked(spy)
        corked.cork((b"\x82\x8a" + b"k" * 4, b"0123456789"))  # a small frame, corked in this loop turn
        corked.cork((b"\x82\x81" + b"k" * 4, b"!"))  # and another (small ones are joined: see SENDMSG_BYTES)
        payload = os.urandom(2 * ws_fastpath.MASK_SEGMENT + 1000)
        key = os.urandom(4)
        head = ws_fastpath._client_head(False, len(payload)) + key
        expected = b"\x82\x8a" + b"k" * 4 + b"0123456789" + b"\x82\x81" + b"k" * 4 + b"!" + head + apply_mask(
            payload, key)
        ws_fastpath._write_large(corked, head, memoryview(payload), key)
        # before: the corked frame and the header each went out in a send (and a TCP segment) of their own
        assert spy.sendmsgs == [[23, 14, ws_fastpath.MASK_SEGMENT]]
        assert transport.writes == [ws_fastpath.MASK_SEGMENT, 1000]
        assert _receive(peer, len(expected)) == expected
    finally:
        spy.close()
        peer.close()


async def test_corked_large_frames_leave_unjoined_in_one_sendmsg() -> None:
    ours, peer = socket.socketpair()
    spy = _SpySocket(fileno=ours.detach())
    try:
        corked, transport = _corked(spy)
        frames = [(ws_fastpath._client_head(False, 40_000) + bytes(4), os.urandom(40_000)) for _ in range(2)]
        for frame in frames:
            corked.cork(frame)
        corked.flush_out()
        assert spy.sendmsgs == [[8, 40_000, 8, 40_000]]  # (a 4-byte header and the mask key, the payload)
        assert transport.writes == []  # before: joined (a copy of every payload byte), then written
        expected = b"".join(part for frame in frames for part in frame)
        assert _receive(peer, len(expected)) == expected
        # Small frames are still joined: one copy costs less than the kernel's walk of many small parts.
        corked.cork((b"\x82\x02", b"ab"))
        corked.flush_out()
        assert len(spy.sendmsgs) == 1 and transport.writes == [4]
        assert _receive(peer, 4) == b"\x82\x02ab"
    finally:
        spy.close()
        peer.close()


async def test_many_small_corked_frames_adding_up_to_64_kib_are_joined() -> None:
    # Before: the total decided, so 250 frames of 300 bytes left as one sendmsg of 500 parts (41 µs against 31 µs
    # for the join and one send, measured on a socket pair).
    ours, peer = socket.socketpair()
    spy = _SpySocket(fileno=ours.detach())
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    try:
        corked, transport = _corked(spy)
        frames = [(ws_fastpath._client_head(False, 300) + bytes(4), os.urandom(300)) for _ in range(250)]
        for frame in frames:
            corked.cork(frame)
        corked.flush_out()
        expected = b"".join(part for frame in frames for part in frame)
        assert spy.sendmsgs == [] and transport.writes == [len(expected)]
        assert _receive(peer, len(expected)) == expected
    finally:
        spy.close()
        peer.close()
