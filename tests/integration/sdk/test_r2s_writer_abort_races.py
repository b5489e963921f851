"""``ChannelWriter.abort()`` (fce8db6, bounded by ``_ABORT_CLOSE_S`` then the connection dropped) racing the writer's
own write and close.

Behind a reader that stopped reading, with a write in flight and ``close_async()`` waiting behind it, abort drops
the connection: the reader gets :class:`ChannelAbortedError`, but ``close_async()`` returned as if the stream had got
through (it found the socket already closed and nothing to report), and the write in flight raised
``ReaderGoneError`` ("the engine dropped the connection (reader gone or engine down)") although the writer itself
had aborted and the reader was still there. An abort() while the writer's first write was still connecting opened
a socket of its own: refused as a second writer, the abort was lost and the reader hung.
"""

from __future__ import annotations

import asyncio

import pytest

from iii import channels as channels_module
from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelError, ReaderGoneError
from iii.iii import III
from iii.types import Channel

pytestmark = [pytest.mark.our_engine("reads the abort through our relay"), pytest.mark.timeout(30)]

BIG = 64 << 20  # far over what the engine and the kernel buffer for a reader that stopped reading


async def _reader_outcome(channel: Channel) -> BaseException | str:
    try:
        async with asyncio.timeout(10):
            async for _ in channel.reader:
                pass
    except ChannelError as exc:
        return exc
    except TimeoutError:
        return "the reader hung"
    return "a clean end"


async def _stalled_write(channel: Channel) -> asyncio.Future[None]:
    write = asyncio.ensure_future(channel.writer.write(bytes(BIG)))
    await channel.reader.recv()  # attached, then not reading
    return write


async def test_close_async_behind_an_abort_raises(worker: III, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_CLOSE_S", 0.5)
    channel = await worker.create_channel_async()
    write = await _stalled_write(channel)
    closing = asyncio.ensure_future(channel.writer.close_async())
    await asyncio.sleep(0.2)  # (close_async now waits behind the write)
    assert not write.done() and not closing.done()
    await asyncio.wait_for(channel.writer.abort("gave up"), 5)
    with pytest.raises(ChannelError):
        await asyncio.wait_for(closing, 5)
    assert isinstance(await _reader_outcome(channel), ChannelAbortedError)
    with pytest.raises(ChannelError):
        await asyncio.wait_for(write, 5)


async def test_a_write_ended_by_the_writers_own_abort_says_so(worker: III, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_CLOSE_S", 0.5)
    channel = await worker.create_channel_async()
    write = await _stalled_write(channel)
    await asyncio.sleep(0)
    assert not write.done()
    await asyncio.wait_for(channel.writer.abort("gave up"), 5)
    with pytest.raises(ChannelClosedError, match="aborted") as raised:
        await asyncio.wait_for(write, 5)
    assert not isinstance(raised.value, ReaderGoneError)
    assert isinstance(await _reader_outcome(channel), ChannelAbortedError)


async def test_abort_while_the_first_write_connects(worker: III) -> None:
    """Before, abort() opened a socket of its own while the write's was connecting: refused as a second writer,
    the abort was lost, the 64 MB write went through, and the reader waited for an end that never came."""
    channel = await worker.create_channel_async()
    reading = asyncio.ensure_future(_reader_outcome(channel))
    write = asyncio.ensure_future(channel.writer.write(bytes(BIG)))
    await asyncio.sleep(0)  # (the write is connecting)
    assert not write.done()
    await asyncio.wait_for(channel.writer.abort("stop"), 5)
    with pytest.raises(ChannelClosedError, match="aborted"):
        await asyncio.wait_for(write, 5)
    assert isinstance(await reading, ChannelAbortedError)


async def test_abort_with_a_write_in_flight_to_a_reading_reader(worker: III) -> None:
    channel = await worker.create_channel_async()
    reading = asyncio.ensure_future(_reader_outcome(channel))
    await channel.writer.write(b"connected")
    write = asyncio.ensure_future(channel.writer.write(bytes(BIG)))
    await asyncio.sleep(0)
    await asyncio.wait_for(channel.writer.abort("stop"), 5)
    try:  # (it may get through before the Close frame: abort waits for the frame being written)
        await asyncio.wait_for(write, 5)
    except ChannelClosedError as exc:
        assert "aborted" in str(exc)
    assert isinstance(await reading, ChannelAbortedError)


async def test_abort_twice_and_at_once(worker: III) -> None:
    channel = await worker.create_channel_async()
    await channel.writer.write(b"abc")
    await asyncio.wait_for(asyncio.gather(channel.writer.abort("1"), channel.writer.abort("2")), 5)
    await asyncio.wait_for(channel.writer.abort("3"), 5)
    assert isinstance(await _reader_outcome(channel), ChannelAbortedError)
    with pytest.raises(ChannelClosedError):
        await channel.writer.close_async()
