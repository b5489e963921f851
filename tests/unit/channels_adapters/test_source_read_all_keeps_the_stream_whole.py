"""``ChannelSource.read_all(limit)`` that crosses its limit mid-stream leaves the message that crossed it buffered,
unread: ``partial`` followed by the next reads is the whole stream, and the trailer check at its end still means
what it says."""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSource, LimitExceededError, sink
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

STREAM = (b"A" * 60, b"B" * 200, b"C" * 50)


async def _write_stream(writer: ChannelWriter) -> None:
    async with sink(writer) as out:
        for block in STREAM:
            await out.write(block)


@pytest.mark.parametrize("read_first", [0, 1])
async def test_read_all_past_its_limit_mid_stream_leaves_the_crossing_chunk_readable(read_first: int) -> None:
    async with local_channel() as ch:
        writing = asyncio.ensure_future(_write_stream(ch.writer))
        source = ChannelSource(ch.reader, require_trailer=True)
        got = await source.read(read_first) if read_first else b""
        with pytest.raises(LimitExceededError, match="exceeds the limit of 100 bytes") as caught:
            await asyncio.wait_for(source.read_all(limit=100), 10)
        assert caught.value.partial is not None and len(caught.value.partial) <= 100
        got += caught.value.partial
        got += await asyncio.wait_for(source.read_all(), 10)
        await writing
        # Before: 110 of 310 bytes (the 200-byte chunk that crossed the limit was dropped), verified all the same.
        assert got == b"".join(STREAM)
        assert source.verified and source.at_eof

