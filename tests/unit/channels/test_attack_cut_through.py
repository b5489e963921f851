"""Attacks on the relay's cut-through path (a message queued from the writer socket's read callback and written to
an idle reader socket in the same callback): order, bytes, close codes and bounds must be those of the loops."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

from iii.channels import build_channel_url
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}
Sent = tuple[bool, str]  # (is text, sha256 of the payload)


def digest(message: str | bytes) -> Sent:
    data = message.encode() if isinstance(message, str) else message
    return isinstance(message, str), hashlib.sha256(data).hexdigest()


async def connect(base: str, ref: dict[str, str]) -> ClientConnection:
    return await websockets.connect(
        build_channel_url(base, ref["channel_id"], ref["access_key"], ref["direction"]), **OPTS)


async def open_pair(base: str, relay: ChannelRelay, buffer_size: int = 8,
                    max_bytes: int | None = None) -> tuple[ClientConnection, ClientConnection, str]:
    refs = relay.create(buffer_size, owner="w", max_bytes=max_bytes)
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    return writer, reader, refs["writer"]["channel_id"]


async def read_all(reader: ClientConnection, pauses: random.Random | None = None) -> list[Sent]:
    """Every message until the close, as digests; with ``pauses``, the socket is left unread now and then (the
    relay's writes to it then meet a full socket, partial sends)."""
    got: list[Sent] = []
    try:
        while True:
            got.append(digest(await asyncio.wait_for(reader.recv(), 10)))
            if pauses is not None and pauses.random() < 0.02:
                reader.transport.pause_reading()
                await asyncio.sleep(pauses.random() * 0.02)
                reader.transport.resume_reading()
    except websockets.ConnectionClosed:
        return got


def payload(rng: random.Random, i: int) -> str | bytes:
    kind = rng.random()
    if kind < 0.15:
        return f"text {i} ✓ " + "é" * rng.randrange(0, 2000)
    if kind < 0.2:
        return b""
    size = rng.choice((1, 7, 100, 1000, 20_000, 70_000, 300_000)) + rng.randrange(0, 50)
    return rng.randbytes(size)


@pytest.fixture
async def big_relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(attach_timeout_s=5.0, max_message_size=1 << 20)) as served:
        yield served


@pytest.mark.parametrize("slow_reader", [False, True], ids=["reading", "pausing"])
async def test_a_mixed_stream_keeps_every_byte_and_its_order(
        any_relay: tuple[str, ChannelRelay], slow_reader: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    base, relay = any_relay
    writer, reader, _ = await open_pair(base, relay)
    rng = random.Random(20261201)
    sent: list[Sent] = []
    reading = asyncio.ensure_future(read_all(reader, random.Random(7) if slow_reader else None))
    for i in range(600):
        message = payload(rng, i)
        if i == 500:  # a fragmented message: the writer's socket is handed to websockets from here on
            parts = [b"frag-a", b"frag-b" * 1000, b"frag-c"]
            await writer.send(parts)
            sent.append(digest(b"".join(parts)))
            continue
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # lets the relay's loops go idle now and then: both paths take turns
        await writer.send(message)
        sent.append(digest(message))
    await writer.close()
    got = await asyncio.wait_for(reading, 30)
    assert got == sent
    close = reader.protocol.close_rcvd
    assert close is not None and close.code in (1000, 1005)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_many_tiny_messages_in_order(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    writer, reader, _ = await open_pair(base, r, buffer_size=1024)
    count = 20_000
    reading = asyncio.ensure_future(read_all(reader))
    for i in range(count):
        await writer.send(i.to_bytes(3, "big"))
    await writer.close()
    got = await asyncio.wait_for(reading, 25)
    assert got == [digest(i.to_bytes(3, "big")) for i in range(count)]


async def test_a_close_right_after_cut_through_messages_loses_none(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    for round_ in range(30):
        writer, reader, _ = await open_pair(base, r)
        messages = [bytes([round_, i]) * (1 + 9000 * i) for i in range(4)]
        reading = asyncio.ensure_future(read_all(reader))
        for message in messages:
            await writer.send(message)
        await writer.close()  # right behind them: the Close may come in the same read
        assert await asyncio.wait_for(reading, 10) == [digest(m) for m in messages]
        close = reader.protocol.close_rcvd
        assert close is not None and close.code == 1000


async def _refused(base: str, r: ChannelRelay, bad: str | bytes | Frame, max_bytes: int | None = None,
                   then_close: bool = False) -> tuple[list[Sent], int | None, int | None]:
    """Good messages then ``bad`` (a :class:`Frame`: written as it is; with ``then_close`` a Close 1000 right
    behind it) in one write, both relay loops idle: what the reader got, its close code, the writer's."""
    writer, reader, _ = await open_pair(base, r, max_bytes=max_bytes)
    await writer.send(b"warm-up")
    assert await asyncio.wait_for(reader.recv(), 5) == b"warm-up"  # both loops idle from here on
    reading = asyncio.ensure_future(read_all(reader))
    writer.transport.pause_reading()  # nothing of the relay's answer is read until all was written
    for i in range(3):
        await writer.send(bytes([i]) * 100)
    if isinstance(bad, Frame):
        writer.protocol.send_frame(bad)
        writer.send_data()
    else:
        await writer.send(bad)
    if then_close:
        writer.protocol.send_close(1000)
        writer.send_data()
    writer.transport.resume_reading()
    await asyncio.wait_for(writer.wait_closed(), 5)
    got = await asyncio.wait_for(reading, 5)
    writer_close = writer.protocol.close_rcvd
    reader_close = reader.protocol.close_rcvd
    return (got, None if reader_close is None else reader_close.code,
            None if writer_close is None else writer_close.code)


async def test_refusals_on_the_callback_path_keep_their_close_codes(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    good = [digest(bytes([i]) * 100) for i in range(3)]
    # An abort drops what the reader has not been sent yet (4001 says the stream is cut): some of those before
    # the refused one, in order, never one after it.
    got, reader_code, writer_code = await _refused(base, r, b"x" * ((1 << 20) + 1))  # over max_message_size
    assert (writer_code, reader_code) == (1009, 4001)
    assert got == good[:len(got)]
    # A text frame that is not UTF-8 (websockets' client would not send it: the frame is written by hand).
    got, reader_code, writer_code = await _refused(base, r, Frame(Opcode.TEXT, b"\xed\xb3\xbf"))
    assert (writer_code, reader_code) == (1007, 4001)
    assert got == good[:len(got)]
    got, reader_code, writer_code = await _refused(base, r, b"y" * 200, max_bytes=7 + 300 + 100)  # over the quota
    assert (writer_code, reader_code) == (1009, 4001)
    assert got == good[:len(got)]


@pytest.mark.parametrize("bad", ["not utf-8", "over quota"])
async def test_a_close_right_behind_a_refused_message_still_hears_the_refusal(
        relay: tuple[str, ChannelRelay], bad: str) -> None:
    # The writer's Close waits behind the refused message: answered at once, the writer would hear 1000.
    base, r = relay
    if bad == "not utf-8":
        result = await _refused(base, r, Frame(Opcode.TEXT, b"\xff"), then_close=True)
        expected = 1007
    else:
        result = await _refused(base, r, b"y" * 200, max_bytes=7 + 300 + 100, then_close=True)
        expected = 1009
    got, reader_code, writer_code = result
    assert (writer_code, reader_code) == (expected, 4001)
    assert got == [digest(bytes([i]) * 100) for i in range(3)][:len(got)]


async def test_a_reader_that_aborts_while_messages_cut_through(
        any_relay: tuple[str, ChannelRelay], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    base, relay = any_relay
    writer, reader, channel_id = await open_pair(base, relay)
    for i in range(50):
        await writer.send(bytes([i]) * 5000)
        if i == 20:
            reader.transport.abort()
    # The writer is told (ours: 4002) or dropped (production), at its latest at its next write; no error logged.
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(200):
            await writer.send(b"z" * 5000)
            await asyncio.sleep(0.005)
    await asyncio.wait_for(relay.wait_idle(), 5)
    assert channel_id not in relay
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_reader_with_a_tiny_receive_window_gets_every_byte_in_order(relay: tuple[str, ChannelRelay]) -> None:
    # The relay's sendmsg to this reader mostly goes out in part: the rest must follow in order, before later frames.
    base, r = relay
    refs = r.create(16, owner="w")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    host, port = base.removeprefix("ws://").rsplit(":", 1)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    ref = refs["reader"]
    reader = await websockets.connect(
        build_channel_url(base, ref["channel_id"], ref["access_key"], "read"), sock=sock, **OPTS)
    writer = await connect(base, refs["writer"])
    rng = random.Random(99)
    reading = asyncio.ensure_future(read_all(reader, random.Random(3)))
    sent: list[Sent] = []
    for i in range(400):
        message = payload(rng, i)
        await writer.send(message)
        sent.append(digest(message))
    await writer.close()
    assert await asyncio.wait_for(reading, 25) == sent


async def test_a_writer_still_streaming_past_its_quota_hears_1009_at_once(relay: tuple[str, ChannelRelay]) -> None:
    # The relay stops reading a writer whose unread messages pass its receive buffer; after its Close the writer's
    # reply could wait behind them, unread, and the close for websockets' close_timeout (10 s): the writer, blocked
    # in its write, heard the refusal only then. Timing decides whether the reply is stuck: a few rounds.
    base, r = relay
    block = random.Random(5).randbytes(256 * 1024)
    loop = asyncio.get_running_loop()
    for _ in range(6):
        writer, reader, channel_id = await open_pair(base, r, max_bytes=8 << 20)
        started = loop.time()
        with pytest.raises(websockets.ConnectionClosed) as info:
            for _ in range(10_000):
                await writer.send(block)  # (in a wait_for, the extra task per write hid the fault)
        took = loop.time() - started
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert took < 3, f"the writer heard its refusal {took:.1f} s later"
        await read_all(reader)  # a start of the stream, then 4001
        assert reader.protocol.close_rcvd is not None and reader.protocol.close_rcvd.code == 4001
        await asyncio.wait_for(r.wait_idle(), 5)
        assert channel_id not in r
