"""Our channel ends (iii.channels) against the relay in both behaviours (ours and production-like)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from iii.channels import (
    ChannelAbortedError,
    ChannelClosedError,
    ChannelNotFoundError,
    ChannelReader,
    ChannelWriter,
    ReaderGoneError,
)
from iii.wire import jsonable
from iii_engine.channels import ChannelRelay


def ends(base: str, relay: ChannelRelay, buffer_size: int | None = None) -> tuple[ChannelWriter, ChannelReader]:
    refs = relay.create(buffer_size, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


@pytest.mark.parametrize("size", [0, 1, 65_536, 65_537, 5_000_000])
async def test_bytes_arrive_intact(any_relay: tuple[str, ChannelRelay], size: int) -> None:
    writer, reader = ends(*any_relay)
    data = os.urandom(size)

    async def send() -> None:
        await writer.write(data)
        await writer.close_async()

    _, got = await asyncio.gather(send(), reader.read_all())
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


async def test_never_written_writer_still_delivers_eof(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    await writer.close_async()
    assert await asyncio.wait_for(reader.read_all(), 5) == b""


async def test_binary_split_at_64k(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    await writer.write(b"q" * (3 * 65_536 + 10))
    writer.close()
    sizes = [len(chunk) async for chunk in reader]
    assert sizes == [65_536, 65_536, 65_536, 10]


async def test_text_dispatched_during_read_all(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    texts: list[str] = []
    reader.on_message(texts.append)
    writer.send_message("first")
    writer.stream.write(b"abc")
    writer.send_message("second")
    writer.stream.end(b"def")
    assert await reader.read_all() == b"abcdef"
    assert texts == ["first", "second"]


async def test_sync_stream_writes_are_ordered_and_signal_high_water(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay, buffer_size=2)
    writer.stream.high_water_mark = 256 * 1024
    blocks = [bytes([i]) * 100_000 for i in range(40)]
    saw_false = False

    async def produce() -> None:
        nonlocal saw_false
        for block in blocks:
            if not writer.stream.write(block):
                saw_false = True
                assert writer.pending_bytes >= writer.stream.high_water_mark
                await writer.stream.drain()
        writer.stream.end()

    _, got = await asyncio.gather(produce(), reader.read_all())
    assert got == b"".join(blocks)
    assert saw_false


async def test_close_waits_for_queued_writes(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    for i in range(50):
        writer.stream.write(bytes([i]) * 10_000)
    close = asyncio.ensure_future(writer.close_async())
    got = await reader.read_all()
    await close
    assert got == b"".join(bytes([i]) * 10_000 for i in range(50))


async def test_writer_abort_raises_on_reader(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    await writer.write(b"half")
    await writer.abort("producer crashed")
    with pytest.raises(ChannelAbortedError, match="producer crashed") as info:
        await reader.read_all()
    assert info.value.code == 4001


async def test_writer_abort_looks_like_eof_in_production(prod_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*prod_relay)
    await writer.write(b"half")
    await writer.abort("producer crashed")
    assert await reader.read_all() == b"half"


async def test_reader_gone_raises_on_next_write(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay, buffer_size=1)
    await writer.write(b"x")
    assert await reader.read_chunk() == b"x"
    await reader.close_async()
    with pytest.raises(ReaderGoneError):
        for _ in range(1000):
            await writer.write(b"y" * 65_536)
    with pytest.raises(ReaderGoneError):
        await writer.write(b"more")


async def test_wrong_key_raises_not_found(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    bad = dict(refs["reader"], access_key="wrong")
    with pytest.raises(ChannelNotFoundError, match=refs["reader"]["channel_id"]):
        await ChannelReader(base, bad).read_all()


async def test_write_after_close_raises(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    await writer.close_async()
    with pytest.raises(ChannelClosedError):
        await writer.write(b"late")
    assert await reader.read_all() == b""


async def test_ends_serialise_as_refs(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])
    assert jsonable({"out": writer, "in": [reader]}) == {"out": refs["writer"], "in": [refs["reader"]]}


async def test_context_manager_aborts_on_exception(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    with pytest.raises(RuntimeError):
        async with writer:
            await writer.write(b"x")
            raise RuntimeError("boom")
    with pytest.raises(ChannelAbortedError, match="boom"):
        await reader.read_all()


async def test_many_channels_at_once(any_relay: tuple[str, ChannelRelay]) -> None:
    base, r = any_relay

    async def one(i: int) -> bool:
        writer, reader = ends(base, r, buffer_size=4)
        data = os.urandom(20_000 + i)

        async def send() -> None:
            await writer.write(data)
            await writer.close_async()

        _, got = await asyncio.gather(send(), reader.read_all())
        return got == data

    assert all(await asyncio.gather(*(one(i) for i in range(100))))
    await asyncio.wait_for(r.wait_idle(), 10)


async def test_reader_close_with_unread_frames_is_prompt(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    writer, reader = ends(base, r, buffer_size=4)

    async def flood() -> None:
        for _ in range(400):
            await writer.write(bytes(65_536))

    flooding = asyncio.ensure_future(flood())
    assert await reader.read_chunk() == bytes(65_536)
    # Full relay queue: the reader's socket and receive queue are full of unread frames too.
    await asyncio.wait_for(r.wait_full(writer.ref.channel_id), 10)
    # Without draining while closing, this waited for websockets' 10 s close timeout.
    await asyncio.wait_for(reader.close_async(), 3)
    with pytest.raises(ReaderGoneError):
        await asyncio.wait_for(flooding, 5)
