"""An invited frame (1 MiB at most, iii.channel_end.INVITED_FRAME_SIZES) is masked whole and leaves with its header
in one ``sendmsg`` (issue 10): in 256 KiB segments a 1 MiB frame cost four system calls and the writer ~9 % more
CPU per GiB."""

from __future__ import annotations

import os
import socket
import threading

from iii import ws_fastpath
from iii.channel_end import INVITED_FRAME_SIZES
from iii.ws_fastpath import apply_mask
from tests.unit.channels.test_writer_sendmsg import _corked, _receive, _SpySocket


async def test_an_invited_frame_leaves_whole_with_its_header_in_one_sendmsg() -> None:
    ours, peer = socket.socketpair()
    spy = _SpySocket(fileno=ours.detach())
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    size = INVITED_FRAME_SIZES[1]
    payload = os.urandom(size)
    key = os.urandom(4)
    head = ws_fastpath._client_head(False, size) + key
    expected = head + apply_mask(payload, key)
    got: list[bytes] = []
    # The peer reads meanwhile: a socket buffer smaller than the frame then never makes it a partial send.
    reading = threading.Thread(target=lambda: got.append(_receive(peer, len(expected))))
    reading.start()
    try:
        corked, transport = _corked(spy)
        ws_fastpath._write_large(corked, head, memoryview(payload), key)
        reading.join(10)
        assert got == [expected]
        # before: [[14, 262144]] and three writes of 262144 (four system calls)
        assert spy.sendmsgs == [[14, size]]
        assert transport.writes == []
    finally:
        reading.join(10)
        spy.close()
        peer.close()
