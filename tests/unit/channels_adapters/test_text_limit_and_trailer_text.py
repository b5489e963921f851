"""Two ways text went missing or broke a transfer without a word at the right end.

Past ``text_limit`` a ``ChannelSource`` had taken the message from the reader but neither held nor handed it on:
a caller that caught ``LimitExceededError`` and read on lost it (``messages()`` gave ``['first', 'third']``,
stream verified). Now the source fails for good there, as after a raising progress callback.

``ChannelSink.send_text`` took text beginning like the integrity trailer, which failed the whole transfer at the
reader ("malformed integrity trailer"); now the sender refuses it."""

from __future__ import annotations

import asyncio

import pytest

from iii_channels import ChannelClosedError, ChannelSink, ChannelSource, LimitExceededError
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def test_after_text_limit_every_read_raises_and_nothing_is_lost_silently() -> None:
    async with local_channel() as ch:
        async with ChannelSink(ch.writer) as out:
            await out.send_text("first")
            await out.send_text("X" * 20)  # with "first": past text_limit=10
            await out.send_text("third")
            await out.write(b"payload")
        seen: list[str] = []
        source = ChannelSource(ch.reader, text_limit=10, require_trailer=True, on_text=seen.append)
        with pytest.raises(LimitExceededError, match="10 characters"):
            await source.read(100)
        for read in (source.read(100), source.read_all()):
            with pytest.raises(ChannelClosedError, match="text_limit") as caught:
                await read  # before: b"payload", then messages() ['first', 'third'] and verified=True
            assert isinstance(caught.value.__cause__, LimitExceededError)
        assert await source.next_message() == "first"  # held before the limit: still given out, then the error
        with pytest.raises(ChannelClosedError, match="text_limit"):
            await source.next_message()
        assert seen == ["first"] and not source.verified


async def test_send_text_refuses_text_that_reads_as_the_trailer() -> None:
    async with local_channel() as ch:
        async def write() -> None:
            async with ChannelSink(ch.writer) as out:
                with pytest.raises(ValueError, match="integrity trailer"):
                    await out.send_text('{"iii_channels_trailer": "just a user message"}')
                await out.send_text(' {"iii_channels_trailer": "in another form"}')
                await out.write(b"hello")
        source = ChannelSource(ch.reader, require_trailer=True)
        _, data = await asyncio.gather(write(), source.read_all())
        # before: the reader failed: "malformed integrity trailer"
        assert data == b"hello" and source.verified
        assert [m async for m in source.messages()] == [' {"iii_channels_trailer": "in another form"}']
