"""A writer flooding empty (or tiny) messages into a channel nobody reads is stopped like any other: each unread
message counts its payload plus ``MESSAGE_CHARGE`` against the socket's receive buffer, and a read is split into
messages only while they fit under it (the rest of the read waits unsplit). Counted by payload alone, empty
messages never paused the writer's socket (an engine went from 68 MB to 1.1 GB in 20 s) and 1-byte messages held
~480 MB per channel before it paused; split whole, one 1 MiB read still made up to ~175,000 messages at once."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from iii.channels import build_channel_url
from iii.ws_fastpath import MESSAGE_CHARGE, RECEIVE_CHUNK, SPLIT_MIN_MESSAGES, FrameReader, _FastReceive
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

FRAMES = 200_000
SMALL_MARK = 64 * 1024
"""The writer socket's mark where a flood is read: 512 messages' charge instead of the engine's 32,768, so that a
tenth of the messages (each read in Python, one at a time) goes through as many splits."""
READ_LATER_FRAMES = 20_000


def frames(payloads: list[bytes]) -> bytes:
    """Binary frames masked with a zero key (payload as is): 6-7 bytes each on the wire for tiny payloads."""
    return b"".join(b"\x82" + bytes([0x80 | len(payload)]) + b"\0\0\0\0" + payload for payload in payloads)


async def connect_end(base: str, ref: dict[str, str], **options: Any) -> ClientConnection:
    """A plain websockets client as one end of a channel (``ref``) of the relay at ``base``."""
    return await websockets.connect(build_channel_url(base, ref["channel_id"], ref["access_key"], ref["direction"]),
                                    ping_interval=None, compression=None, **options)


def watch_connections(monkeypatch: pytest.MonkeyPatch) -> list[_FastReceive]:
    """The fast connections that receive messages from now on, in the order they first do."""
    seen: list[_FastReceive] = []
    deliver = _FastReceive._deliver

    def watched(self: _FastReceive, *args: Any) -> None:
        if self not in seen:
            seen.append(self)
        deliver(self, *args)

    monkeypatch.setattr(_FastReceive, "_deliver", watched)
    return seen


def small_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel writer sockets accepted from now on stop being read at :data:`SMALL_MARK` (the relay's
    ``SOCKET_QUEUE_BYTES``, where the test server and the relay's driver use it)."""
    monkeypatch.setattr(f"{relay_server.__module__}.SOCKET_QUEUE_BYTES", SMALL_MARK)
    monkeypatch.setattr("iii_engine.channels.driver.SOCKET_QUEUE_BYTES", SMALL_MARK)


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[object]:
    """The instances of ``cls`` whose method ``name`` is called from now on, one entry per call."""
    calls: list[object] = []
    method = getattr(cls, name)

    def counted(self: object, *args: Any) -> Any:
        calls.append(self)
        return method(self, *args)

    monkeypatch.setattr(cls, name, counted)
    return calls


async def read_messages(recv: Callable[[], Awaitable[str | bytes]], count: int) -> list[str | bytes]:
    """The next ``count`` messages ``recv`` returns."""
    return [await recv() for _ in range(count)]


@asynccontextmanager
async def flooded(monkeypatch: pytest.MonkeyPatch, flood: bytes,
                  messages: int = FRAMES) -> AsyncIterator[tuple[_FastReceive, str, Any]]:
    """A channel whose writer sent ``flood`` (``messages`` messages) with no reader attached, once the engine's side of
    the writer's socket stopped reading (or, before, held every message): ``(that connection, the relay's base URL,
    the reader's ref)``."""
    seen = watch_connections(monkeypatch)
    # No reader attaches (its deadline is far off): the channel's queue fills, then the writer's socket holds the rest
    async with relay_server(ChannelRelay(attach_timeout_s=60.0)) as (base, relay):
        refs = relay.create(3, owner="w")
        ref = refs["writer"]
        writer = await connect_end(base, ref)
        try:
            writer.transport.write(flood)

            def settled() -> bool:  # paused, or every frame read and held (before)
                return any(conn._paused or len(conn._inbox) >= messages - 10 for conn in seen)

            for _ in range(2000):  # the engine reads what arrives; at most 20 s
                if settled():
                    break
                await asyncio.sleep(0.01)
            (conn,) = seen
            yield conn, base, refs["reader"]
        finally:
            writer.transport.abort()


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one-byte"])
async def test_a_flood_of_tiny_messages_pauses_the_writer_socket(monkeypatch: pytest.MonkeyPatch,
                                                                 payload: bytes) -> None:
    async with flooded(monkeypatch, frames([payload] * FRAMES)) as (conn, _, _):
        held = len(conn._inbox)
        assert conn._paused, f"{held:,} unread messages and the writer's socket was never paused"
        # split only while they fit under its mark: the rest of the read waits as bytes (at most one read's)
        most = conn._high // MESSAGE_CHARGE + SPLIT_MIN_MESSAGES
        assert held <= most, f"{held:,} unread messages held, at most {most:,} fit under the mark"
        assert conn._frames is not None and conn._frames.backlog <= RECEIVE_CHUNK[1]


async def test_a_flood_read_later_arrives_whole_in_order_then_its_close(monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller mark: a tenth of the flood crosses more splits than the whole did under the engine's (38 against 3),
    # and the reader's 200,000 recv() calls took 12-15 s
    small_mark(monkeypatch)
    payloads = [bytes([i % 251]) for i in range(READ_LATER_FRAMES)]
    close = b"\x88\x82\0\0\0\0" + struct.pack("!H", 1000)  # the writer's Close right behind its messages
    async with flooded(monkeypatch, frames(payloads) + close, len(payloads)) as (conn, base, ref):
        assert conn._high == SMALL_MARK
        assert conn._paused and conn._frames is not None and conn._frames.backlog > 0, "nothing left unsplit"
        splits = count_calls(monkeypatch, _FastReceive, "_split_backlog")
        reader = await connect_end(base, ref, max_queue=None)
        try:
            got = await asyncio.wait_for(read_messages(reader.recv, len(payloads)), 20)
            assert got == payloads  # none lost, none reordered across the splits
            assert len(splits) >= 20, f"the rest of a read was split {len(splits)} times: too few to test"
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(reader.recv(), 10)
            assert reader.close_code == 1000
        finally:
            reader.transport.abort()


async def test_a_deferred_close_keeps_the_writer_socket_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Behind a flood: a text message that is not UTF-8 (the relay will refuse it), then the writer's Close. The Close
    # waits until the messages before it are read, and the socket must not be read meanwhile: the reader's reads
    # resumed it, and what the writer sent after its Close piled up in memory without bound (86 MB in 8 s).
    # A smaller mark (as the flood read later): a tenth of the messages, and the 100 left unread (64 of them in the
    # channel's queue) are under a quarter of the mark, where the reader's reads resumed the socket
    small_mark(monkeypatch)
    seen = watch_connections(monkeypatch)
    flood, read = 22_100, 22_000
    bad = b"\x81\x86\0\0\0\0\xff\xfe bad"
    close = b"\x88\x82\0\0\0\0" + struct.pack("!H", 1000)
    async with relay_server(ChannelRelay(attach_timeout_s=60.0)) as (base, relay):
        refs = relay.create(64, owner="w")
        ref = refs["writer"]
        writer = await connect_end(base, ref)
        reader = relay.open_local(refs["reader"]["channel_id"], refs["reader"]["access_key"], "read")
        try:
            writer.transport.write(frames([b"x"] * flood) + bad + close)
            # not up to the refused message: its Close stays deferred
            assert await asyncio.wait_for(read_messages(reader.recv, read), 20) == [b"x"] * read
            (conn,) = seen
            assert conn._high == SMALL_MARK
            assert conn._deferred is not None, "the Close was not deferred: nothing tested"
            assert not conn.transport.is_reading(), "the writer's socket is read while its Close is deferred"
        finally:
            reader.abort()
            writer.transport.abort()


def test_a_read_split_a_few_messages_at_a_time_is_not_copied_again_per_split() -> None:
    # The rest of a read is kept once and split from an offset: copied again per split, a read split a few messages
    # at a time cost its size squared (1 MiB of empty frames, 8 at a time: 535 ms instead of 140).
    reader = FrameReader(masked=True)
    messages, _, _ = reader.feed(memoryview(frames([b"%d" % n for n in range(10_000)])), 8)
    kept = reader._backlog
    while reader.backlog:
        assert reader._backlog is kept
        more, _, _ = reader.feed(b"", 8)
        assert 0 < len(more) <= 8
        messages += more
    assert [payload for _, payload in messages] == [b"%d" % n for n in range(10_000)]
