"""The stream socket's ``client_queue_bytes`` rule: a client is behind when that many bytes of frames already wait
for it; a frame's own size never closes it.

Before, a frame bigger than the budget went through to an empty queue but closed the client as "too slow" when a
few small frames waited (or one was still being written), though the client was reading as fast as it could.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine.modules.stream import socket as stream_socket

BUDGET = 64 * 1024


class _Peer:
    """The parts of a server connection a client's queue uses: its address and a close."""

    remote_address = ("127.0.0.1", 1)
    close_timeout = 0.0

    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def _client(peer: _Peer) -> Any:
    return stream_socket._Client(peer, None, 1024, 1.0, BUDGET)  # type: ignore[arg-type]


async def _settled(client: Any) -> None:
    if client.closer is not None:
        await client.closer


async def test_a_frame_bigger_than_the_budget_is_queued_behind_a_few_small_ones() -> None:
    peer = _Peer()
    client = _client(peer)
    client.offer(b"e" * 100)  # an event the writer has not had a turn to take yet
    client.offer(b"s" * (4 * BUDGET))  # a big group's sync
    await _settled(client)
    assert not client.overflowed and peer.closed_with is None
    assert client.queue.qsize() == 2 and client.queued_bytes == 100 + 4 * BUDGET


async def test_a_frame_bigger_than_the_budget_is_queued_to_an_empty_queue() -> None:
    client = _client(_Peer())
    client.offer(b"s" * (4 * BUDGET))
    await _settled(client)
    assert not client.overflowed and client.queue.qsize() == 1


async def test_the_frame_being_written_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big sync takes the client a while to read: the small events meanwhile queue behind it."""
    writing = asyncio.Event()
    written = asyncio.Event()

    async def slow_send(ws: Any, text: bool, frame: bytes) -> None:
        writing.set()
        await written.wait()

    monkeypatch.setattr(stream_socket, "send_server_frame", slow_send)
    peer = _Peer()
    client = _client(peer)
    writer = asyncio.get_running_loop().create_task(client.write())
    try:
        client.offer(b"s" * (4 * BUDGET))
        await writing.wait()
        for _ in range(10):
            client.offer(b"e" * 1000)
        await _settled(client)
        assert not client.overflowed and peer.closed_with is None
        assert client.queue.qsize() == 10 and client.queued_bytes == 10 * 1000
    finally:
        writer.cancel()


async def test_a_client_with_the_budget_waiting_is_closed_as_too_slow() -> None:
    """The bound stays: once the budget's worth of frames waits, the next frame closes the client with 1013."""
    peer = _Peer()
    client = _client(peer)
    for _ in range(BUDGET // 1024):
        client.offer(b"e" * 1024)
    assert not client.overflowed and client.queued_bytes == BUDGET
    client.offer(b"e")
    await _settled(client)
    assert client.overflowed and peer.closed_with is not None and peer.closed_with[0] == 1013
    assert "too slow" in peer.closed_with[1]
    client.offer(b"e")  # nothing more is queued for a client being closed
    assert client.queue.qsize() == BUDGET // 1024
