"""A ``ChannelSource`` progress callback that raises fails the source for good. The chunk it was called for was
already counted and digested: a caller that caught the error and read on got the rest of the stream without that
chunk and ended ``verified=True`` on 9,000 of 10,000 bytes. Now every later read that needs the channel raises."""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelClosedError, ChannelSink, ChannelSource
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _ten_chunks(writer: ChannelWriter) -> None:
    async with ChannelSink(writer) as out:
        for i in range(10):
            await out.write(bytes([i]) * 1000)
            await out.drain()  # one message each


async def test_a_raising_progress_callback_fails_the_source_for_good() -> None:
    async with local_channel() as ch:
        writing = asyncio.ensure_future(_ten_chunks(ch.writer))
        calls: list[int] = []

        def progress(done: int, total: int | None) -> None:
            calls.append(done)
            if len(calls) == 3:
                raise OSError("progress display failed")

        source = ChannelSource(ch.reader, progress=progress, require_trailer=True)
        got = [await source.read(1 << 20), await source.read(1 << 20)]
        with pytest.raises(OSError, match="progress display failed"):
            await source.read(1 << 20)
        for read in (source.read(1 << 20), source.read_all(), source.next_message()):
            with pytest.raises(ChannelClosedError, match="progress callback raised OSError") as caught:
                await read  # before: the rest of the stream, then verified=True
            assert isinstance(caught.value.__cause__, OSError)
        assert b"".join(got) == bytes([0]) * 1000 + bytes([1]) * 1000
        assert not source.verified
        assert len(calls) == 3  # not called again
        await ch.reader.close_async()
        await asyncio.gather(writing, return_exceptions=True)  # the writer may hear the reader left


async def test_a_progress_close_that_raises_at_the_end_leaves_the_source_unverified() -> None:
    async with local_channel() as ch:
        writing = asyncio.ensure_future(_ten_chunks(ch.writer))

        source = ChannelSource(ch.reader, progress=lambda done, total: None, require_trailer=True)
        reporter = source._progress
        assert reporter is not None

        def close() -> None:
            raise BrokenPipeError(32, "Broken pipe")

        reporter.close = close  # type: ignore[method-assign]
        with pytest.raises(BrokenPipeError):
            await source.read_all()
        with pytest.raises(ChannelClosedError):
            await source.read()
        assert not source.verified
        await writing
