"""``ChannelReader.read_all(limit=...)`` through the engine: past ``limit`` bytes it raises
:class:`LimitExceededError` (the same class as ``iii_channels.LimitExceededError``) instead of holding whatever a
peer writes; ``.partial`` holds at most ``limit`` bytes, and the chunk that crossed the limit is left to the next
read, so ``.partial`` followed by the next reads is the whole stream. Bytes a cancelled ``read_all`` put back count
against the limit. Before, ``read_all`` took no limit (TypeError), and a peer that wrote for good grew the reader's
memory for good."""

from __future__ import annotations

import asyncio

import pytest

import iii_channels
from iii.channels import ChannelWriter, LimitExceededError, ReaderGoneError
from iii_channels import ChannelSource
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _write_closed(writer: ChannelWriter, *blocks: bytes) -> None:
    for block in blocks:
        await writer.write(block)
    await writer.close_async()


async def test_past_the_limit_partial_and_the_next_reads_are_the_whole_stream() -> None:
    async with local_channel() as ch:
        await _write_closed(ch.writer, b"aaaa", b"bbbb", b"cccc")
        with pytest.raises(iii_channels.LimitExceededError, match="exceeds the limit of 10 bytes") as caught:
            await asyncio.wait_for(ch.reader.read_all(limit=10), 10)
        assert type(caught.value) is LimitExceededError  # one class, SDK and layer alike
        assert caught.value.partial == b"aaaabbbb"  # the chunk that crossed the limit is not in it
        assert (caught.value.limit, caught.value.channel_id) == (10, ch.reader.ref.channel_id)
        assert caught.value.__notes__ == [
            "ChannelReader.read_all had read 8 bytes of the stream when this was raised (kept in .partial)"]
        assert not ch.reader.at_eof
        assert caught.value.partial + await asyncio.wait_for(ch.reader.read_all(), 10) == b"aaaabbbbcccc"


async def test_a_peer_that_writes_for_good_is_stopped_at_the_limit() -> None:
    async with local_channel() as ch:
        block = b"x" * 65_536

        async def write_for_good() -> None:
            while True:
                await ch.writer.write(block)

        writing = asyncio.ensure_future(write_for_good())
        with pytest.raises(LimitExceededError) as caught:
            await asyncio.wait_for(ch.reader.read_all(limit=1 << 20), 10)
        assert caught.value.partial == block * 16  # 1 MiB exactly: the 17th block crossed the limit
        await ch.reader.close_async()
        with pytest.raises(ReaderGoneError):
            await asyncio.wait_for(writing, 10)


@pytest.mark.parametrize(("blocks", "limit"), [((b"aaaa", b"bbbb", b"cccc"), 12), ((), 0), ((b"abc",), 3)])
async def test_a_stream_of_exactly_the_limit_is_read_whole(blocks: tuple[bytes, ...], limit: int) -> None:
    async with local_channel() as ch:
        await _write_closed(ch.writer, *blocks)
        assert await asyncio.wait_for(ch.reader.read_all(limit=limit), 10) == b"".join(blocks)
        assert ch.reader.at_eof


async def test_a_limit_of_zero_refuses_the_first_byte() -> None:
    async with local_channel() as ch:
        await _write_closed(ch.writer, b"a")
        with pytest.raises(LimitExceededError) as caught:
            await asyncio.wait_for(ch.reader.read_all(limit=0), 10)
        assert caught.value.partial == b""
        assert await asyncio.wait_for(ch.reader.read_all(), 10) == b"a"


BAD_LIMITS = pytest.mark.parametrize(("limit", "error", "message"), [
    (-1, ValueError, r"read_all: limit must be 0 or more \(bytes\), got -1"),
    (True, TypeError, "read_all: limit must be an int .* or None, not bool"),
    (1.5, TypeError, "read_all: limit must be an int .* not float"),
    ("10", TypeError, "read_all: limit must be an int .* not str"),
], ids=["negative", "bool", "float", "str"])


@BAD_LIMITS
async def test_a_bad_limit_is_refused_before_anything_is_read(limit: object, error: type[Exception],
                                                             message: str) -> None:
    async with local_channel() as ch:
        await _write_closed(ch.writer, b"all of it")
        with pytest.raises(error, match=f"ChannelReader.{message}"):
            await ch.reader.read_all(limit=limit)  # type: ignore[arg-type]
        assert ch.reader.bytes_read == 0
        assert await asyncio.wait_for(ch.reader.read_all(limit=9), 10) == b"all of it"


@BAD_LIMITS
async def test_the_source_refuses_a_bad_limit_too(limit: object, error: type[Exception], message: str) -> None:
    """The same check (before, -1 raised LimitExceededError at the first byte, True read as 1)."""
    async with local_channel() as ch:
        await _write_closed(ch.writer, b"all of it")
        source = ChannelSource(ch.reader)
        with pytest.raises(error, match=f"ChannelSource.{message}"):
            await source.read_all(limit=limit)  # type: ignore[arg-type]
        assert await asyncio.wait_for(source.read_all(limit=9), 10) == b"all of it"


async def test_bytes_a_cancelled_read_put_back_count_against_the_limit() -> None:
    async with local_channel() as ch:
        sent = asyncio.Event()
        ch.reader.on_message(lambda _text: sent.set())
        reading = asyncio.ensure_future(ch.reader.read_all())
        await ch.writer.write(b"aaaa")
        await ch.writer.write(b"bbbb")
        await ch.writer.send_message_async("both sent")  # its callback runs once the reader read both blocks
        await asyncio.wait_for(sent.wait(), 10)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        with pytest.raises(LimitExceededError) as caught:  # the 8 bytes put back are more than 7
            await asyncio.wait_for(ch.reader.read_all(limit=7), 10)
        assert caught.value.partial == b""
        await _write_closed(ch.writer, b"cccc")
        with pytest.raises(LimitExceededError) as caught:
            await asyncio.wait_for(ch.reader.read_all(limit=11), 10)
        assert caught.value.partial == b"aaaabbbb"
        assert await asyncio.wait_for(ch.reader.read_all(limit=4), 10) == b"cccc"
