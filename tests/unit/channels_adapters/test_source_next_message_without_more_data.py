"""``ChannelSource.next_message()`` / ``messages()`` hand a text message over as it arrives: they waited on for
the next binary message (or the end) after it, so a header sent before a pause in the data, or a writer waiting
for an answer to it, held the reader until the writer went on or closed."""

from __future__ import annotations

import asyncio

import pytest

from iii_channels import ChannelSink, ChannelSource
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def test_a_text_with_nothing_after_it_yet_is_handed_over() -> None:
    async with local_channel() as ch:
        async with ChannelSink(ch.writer) as out:
            source = ChannelSource(ch.reader, require_trailer=True)
            await out.write(b"before")
            await out.send_text("first")
            await out.drain()
            assert await asyncio.wait_for(source.next_message(), 10) == "first"  # before: TimeoutError
            texts = source.messages()
            await out.send_text("second")
            await out.drain()
            assert await asyncio.wait_for(anext(texts), 10) == "second"
            await out.write(b" after")
        assert [text async for text in texts] == []
        assert await source.read_all() == b"before after"
        assert source.verified
