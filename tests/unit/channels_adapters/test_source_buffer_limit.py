"""``ChannelSource.next_message()`` / ``messages()`` hold the binary data that arrives before the text they wait
for, at most ``buffer_limit`` bytes: a writer that sends only bytes grew the reader without bound (300 MiB held
for one late header). Past the limit they raise ``LimitExceededError`` naming it; the bytes stay for byte reads."""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, ChannelSource, LimitExceededError
from iii_channels.source import DEFAULT_BUFFER_LIMIT
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

_CHUNK = 64 * 1024


async def _bytes_then_text(writer: ChannelWriter, chunks: int) -> None:
    async with ChannelSink(writer) as out:
        for _ in range(chunks):
            await out.write(b"b" * _CHUNK)
        await out.send_text("late header")


@pytest.mark.parametrize("how", ["next_message", "messages"])
async def test_bytes_before_the_text_past_the_limit_raise_naming_it(how: str) -> None:
    limit = 4 * _CHUNK
    async with local_channel() as ch:
        writing = asyncio.ensure_future(_bytes_then_text(ch.writer, 64))
        source = ChannelSource(ch.reader, buffer_limit=limit, require_trailer=True)
        with pytest.raises(LimitExceededError, match=f"buffer_limit.* {limit} bytes") as caught:
            if how == "next_message":
                await source.next_message()
            else:
                [text async for text in source.messages()]
        assert caught.value.limit == limit
        held = len(source._buffer)
        assert limit < held <= limit + _CHUNK  # before: all 4 MiB, and the text
        with pytest.raises(LimitExceededError):  # going on holds no more
            await source.next_message()
        assert len(source._buffer) == held
        # nothing is lost: the bytes, then the text, by reading on
        assert await source.readexactly(64 * _CHUNK) == b"b" * 64 * _CHUNK
        assert await source.next_message() == "late header"
        assert await source.read_all() == b""
        assert source.verified
        await writing


async def test_within_the_limit_and_the_default() -> None:
    assert DEFAULT_BUFFER_LIMIT == 64 * 1024 * 1024
    async with local_channel() as ch:
        writing = asyncio.ensure_future(_bytes_then_text(ch.writer, 4))
        source = ChannelSource(ch.reader, buffer_limit=4 * _CHUNK)
        assert await source.next_message() == "late header"
        assert await source.read_all() == b"b" * 4 * _CHUNK
        await writing


async def test_a_negative_limit_is_refused() -> None:
    async with local_channel() as ch:
        with pytest.raises(ValueError, match="buffer_limit"):
            ChannelSource(ch.reader, buffer_limit=-1)
