"""The relay moves a message from an idle writer socket to an idle reader socket in the callback that received it:
no wake-up of its loops per message (issue 10), with the same order, bounds and close codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from iii import ws_fastpath
from iii.channel_end import WebSocketEnd
from iii.channels import build_channel_url
from iii.ws_fastpath import FastServerConnection
from iii_engine.channels import ChannelRelay, driver
from iii_engine.channels.driver import SEND_BATCH_BYTES, LiveChannel, _batch_bytes

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


async def connect(base: str, ref: dict[str, str]) -> ClientConnection:
    return await websockets.connect(
        build_channel_url(base, ref["channel_id"], ref["access_key"], ref["direction"]), **OPTS)


@pytest.fixture
def loop_turns(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the relay's reader loop asked for its next step and its ends were read through ``receive``."""
    counts = {"reader_next": 0, "receive": 0}
    reader_next = LiveChannel.reader_next
    receive = WebSocketEnd.receive

    async def counted_next(self: LiveChannel) -> Any:
        counts["reader_next"] += 1
        return await reader_next(self)

    async def counted_receive(self: WebSocketEnd) -> Any:
        counts["receive"] += 1
        return await receive(self)

    monkeypatch.setattr(LiveChannel, "reader_next", counted_next)
    monkeypatch.setattr(WebSocketEnd, "receive", counted_receive)
    return counts


@pytest.fixture
async def pair(relay: tuple[str, ChannelRelay]) -> AsyncIterator[tuple[ClientConnection, ClientConnection, str]]:
    """A writer and a reader socket on one channel of ``buffer_size`` 3, and its id."""
    base, r = relay
    refs = r.create(3, owner="w")
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    yield writer, reader, refs["writer"]["channel_id"]
    await writer.close()
    await reader.close()


@asynccontextmanager
async def idle_pair(relay: tuple[str, ChannelRelay], size: int) -> AsyncIterator[
        tuple[ClientConnection, ClientConnection, LiveChannel, FastServerConnection, WebSocketEnd]]:
    """A writer and a reader on a channel of ``size`` that moved one message, both relay loops idle (the writer's
    waiting on its socket, the reader's for data): ``(writer, reader, channel, the relay's writer socket,
    reader_end)``."""
    base, r = relay
    refs = r.create(size, owner="w")
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    try:
        await writer.send(b"first")
        assert await asyncio.wait_for(reader.recv(), 5) == b"first"
        ch = r._channels[refs["writer"]["channel_id"]]
        writer_end, reader_end = ch.writer_end, ch.reader_end
        assert isinstance(writer_end, WebSocketEnd) and isinstance(reader_end, WebSocketEnd)
        assert isinstance(writer_end.ws, FastServerConnection)
        assert ch.writer_idle and ch.data.waiting
        yield writer, reader, ch, writer_end.ws, reader_end
    finally:
        await writer.close()
        await reader.close()


async def test_one_message_at_a_time_wakes_no_relay_loop(
        loop_turns: dict[str, int], pair: tuple[ClientConnection, ClientConnection, str]) -> None:
    # (loop_turns first: the relay's loops look their methods up once, as the ends attach)
    writer, reader, _ = pair
    await writer.send(b"first")
    assert await asyncio.wait_for(reader.recv(), 5) == b"first"  # both ends attached and idle from here on
    before = dict(loop_turns)
    for i in range(20):
        payload = i.to_bytes(2, "big") * (1 + 5000 * i)  # up to ~190 KiB: small and corked, and larger
        await writer.send(payload)
        assert await asyncio.wait_for(reader.recv(), 5) == payload
    # Before: the writer loop received each message and woke the reader loop, 20 turns of each.
    assert loop_turns["reader_next"] - before["reader_next"] == 0
    assert loop_turns["receive"] - before["receive"] == 0
    await writer.close()
    with pytest.raises(websockets.ConnectionClosedOK):
        await asyncio.wait_for(reader.recv(), 5)
    assert reader.protocol.close_rcvd is not None and reader.protocol.close_rcvd.code == 1000


async def test_a_stalled_reader_still_bounds_the_queue_and_gets_everything_in_order(
        relay: tuple[str, ChannelRelay], pair: tuple[ClientConnection, ClientConnection, str]) -> None:
    _, r = relay
    writer, reader, channel_id = pair
    reader.transport.pause_reading()  # the reader process stops reading: its socket and the relay's fill up
    count = 400

    async def write_many() -> None:
        for i in range(count):
            await writer.send(i.to_bytes(4, "big") * 16384)

    task = asyncio.create_task(write_many())
    # Written straight to the reader socket while it took them, then queued: the queue fills and the relay stops
    # reading the writer, also when messages were queued from the socket's callback (the reader loop may then
    # move the queue into its socket's buffer and wait there, as before).
    await asyncio.wait_for(r.wait_full(channel_id), 10)
    assert not task.done()
    reader.transport.resume_reading()
    for i in range(count):
        assert await asyncio.wait_for(reader.recv(), 10) == i.to_bytes(4, "big") * 16384
    assert r.stats(channel_id)["peak"] == 3  # the deepest the queue ever got
    await task


async def test_more_than_one_batch_arriving_at_once_all_reaches_an_idle_reader(
        relay: tuple[str, ChannelRelay]) -> None:
    # One read of the writer socket that brings more than SEND_BATCH_BYTES (a busy machine: the engine read late)
    # is taken in the socket's callback; one batch went straight to the reader socket and the rest stayed queued
    # until the writer's next message: for good when none came (`iii-channel send -` with stdin left open lost its
    # last 16-148 KB of 1 MB, 1 run in 3 under CPU load).
    async with idle_pair(relay, 16) as (_, reader, _, writer_ws, reader_end):
        # More than one batch can take: the room under the reader socket's high mark, and SEND_BATCH_BYTES.
        most = max(SEND_BATCH_BYTES, reader_end.ws.transport.get_write_buffer_limits()[1])
        payloads = [bytes([i]) * (64 << 10) for i in range(most // (64 << 10) + 2)]
        writer_ws._deliver([(False, p) for p in payloads], [], None)  # what that one read delivers
        for payload in payloads:
            assert await asyncio.wait_for(reader.recv(), 5) == payload


async def test_what_one_read_brings_leaves_in_one_write_without_waking_the_reader_loop(
        loop_turns: dict[str, int], relay: tuple[str, ChannelRelay], monkeypatch: pytest.MonkeyPatch) -> None:
    # Sixteen 64 KiB frames (1 MiB, one read of the reference SDK's writer) reach an idle reader socket with room
    # under its high mark: one write from the callback that read them. Cut at SEND_BATCH_BYTES (256 KiB), the rest
    # woke the reader loop and left in three more writes (issue 10: ~11 % of the relay's CPU with 64 KiB frames).
    async with idle_pair(relay, 64) as (_, reader, ch, writer_ws, reader_end):
        transport = reader_end.ws.transport
        high = transport.get_write_buffer_limits()[1]
        payloads = [bytes([i]) * (64 << 10) for i in range(16)]
        assert sum(map(len, payloads)) <= high - transport.get_write_buffer_size()
        writes: list[int] = []
        write = ws_fastpath.write_server_frames

        def counted(ws: Any, messages: list[tuple[bool, bytes]]) -> bool:
            writes.append(len(messages))
            return write(ws, messages)

        monkeypatch.setattr(driver, "write_server_frames", counted)
        before = dict(loop_turns)
        writer_ws._deliver([(False, p) for p in payloads], [], None)  # what that one read delivers
        assert writes == [16]
        assert not ch.machine.items
        for payload in payloads:
            assert await asyncio.wait_for(reader.recv(), 5) == payload
        assert loop_turns["reader_next"] == before["reader_next"]


class _Transport:
    def __init__(self, high: int, buffered: int) -> None:
        self.high = high
        self.buffered = buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.high // 4, self.high

    def get_write_buffer_size(self) -> int:
        return self.buffered


class _Ws:
    def __init__(self, transport: object) -> None:
        self.transport = transport


@pytest.mark.parametrize(("high", "buffered", "expected"), [
    (1 << 20, 0, 1 << 20),  # an idle relay socket: all the room under its mark
    (1 << 20, 300 << 10, (1 << 20) - (300 << 10)),
    (1 << 20, 900 << 10, SEND_BATCH_BYTES),  # little room: the fixed batch, as before
    (1 << 20, 2 << 20, SEND_BATCH_BYTES),  # over the mark (a write that went past it)
    (0, 0, SEND_BATCH_BYTES),  # no mark at all
])
def test_a_batch_is_the_room_under_the_mark_and_never_less_than_the_fixed_batch(
        high: int, buffered: int, expected: int) -> None:
    assert _batch_bytes(_Ws(_Transport(high, buffered))) == expected  # type: ignore[arg-type]


def test_a_transport_without_marks_gets_the_fixed_batch() -> None:
    assert _batch_bytes(_Ws(object())) == SEND_BATCH_BYTES  # type: ignore[arg-type]
