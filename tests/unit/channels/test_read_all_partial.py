"""A ``read_all`` that fails part-way still raises (a body read returns all of it or fails), but its error now
carries what it had read, as ``.partial``, with a note counting it: before, the chunks gathered were dropped with
the read and the caller could not tell whether anything had arrived. The source's ``read_all(limit=...)`` keeps at
most ``limit`` bytes of it."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from iii.channels import ChannelAbortedError, ChannelReader, ChannelWriter
from iii_channels import ChannelSource, IntegrityError, LimitExceededError
from iii_engine.channels import ChannelRelay
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

DATA = hashlib.sha256(b"x").digest() * 4000  # 128 000 bytes: several frames


async def _abort_once_read(writer: ChannelWriter, read: asyncio.Event) -> None:
    """Write DATA, then a text message the reader's callback answers once it read everything before it; abort."""
    await writer.write(DATA)
    await writer.send_message_async("all sent")
    await asyncio.wait_for(read.wait(), 10)
    await writer.abort("gave up")


async def test_reader_read_all_aborted_part_way_carries_what_it_read(relay: tuple[str, ChannelRelay]) -> None:
    base, channels = relay
    refs = channels.create(None, owner="w")
    writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])
    read = asyncio.Event()
    reader.on_message(lambda _text: read.set())
    writing = asyncio.ensure_future(_abort_once_read(writer, read))
    with pytest.raises(ChannelAbortedError, match="the writer aborted") as caught:
        await asyncio.wait_for(reader.read_all(), 10)
    await writing
    assert caught.value.partial == DATA  # before: AttributeError: no partial (the bytes were dropped)
    assert caught.value.__notes__ == [
        "ChannelReader.read_all had read 128000 bytes of the stream when this was raised (kept in .partial)"]


async def test_source_read_all_aborted_part_way_carries_what_it_read() -> None:
    async with local_channel() as ch:
        read = asyncio.Event()
        writing = asyncio.ensure_future(_abort_once_read(ch.writer, read))
        source = ChannelSource(ch.reader, on_text=lambda _text: read.set())
        with pytest.raises(ChannelAbortedError) as caught:
            await asyncio.wait_for(source.read_all(limit=1 << 20), 10)
        await writing
        assert caught.value.partial == DATA
        assert caught.value.__notes__ == [
            "ChannelSource.read_all had read 128000 bytes of the stream when this was raised (kept in .partial)"]


async def test_source_read_all_over_its_limit_keeps_at_most_the_limit() -> None:
    async with local_channel() as ch:
        for block in (b"aaaa", b"bbbb", b"cccc"):
            await ch.writer.write(block)
        await ch.writer.close_async()
        with pytest.raises(LimitExceededError, match="exceeds the limit of 10 bytes") as caught:
            await asyncio.wait_for(ChannelSource(ch.reader).read_all(limit=10), 10)
        assert caught.value.partial == b"aaaabbbb"  # the chunk past the limit is not held


async def test_source_read_all_failing_its_integrity_check_carries_the_stream() -> None:
    async with local_channel() as ch:
        await ch.writer.write(b"no trailer follows")
        await ch.writer.close_async()
        with pytest.raises(IntegrityError, match="without an integrity trailer") as caught:
            await asyncio.wait_for(ChannelSource(ch.reader, require_trailer=True).read_all(), 10)
        assert caught.value.partial == b"no trailer follows"
