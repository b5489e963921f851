"""``ChannelSink.write`` cancelled while it waits at the high-water mark follows the SDK writer's rule.

Before: its bytes had been queued and digested before the wait, so they went out all the same; a caller that
retried the cancelled write (a timeout, say) sent them twice, under a trailer that verified (the attack: 35 blocks
sent, 36 received, ``verified=True``). Now a write whose bytes are still queued is withdrawn whole (a retry sends
them once), and one whose bytes were on their way aborts the stream (a retry would send them twice).
"""

from __future__ import annotations

import asyncio

import pytest

from iii_channels import ChannelAbortedError, ChannelClosedError, ChannelSink, ChannelSource
from iii_engine.channels import ChannelRelay
from tests.polling import until
from tests.unit.channels_adapters.test_channels_attack_adapters import ends
from tests.unit.channels_adapters.test_channels_attack_adapters import relay as _relay

pytestmark = pytest.mark.timeout(30)
relay = _relay  # the fixture, shared

BLOCK = 32 << 20  # more than the relay (64 KiB here) and the sockets between hold while nobody reads


async def test_a_write_cancelled_once_its_bytes_went_out_aborts_the_stream(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay, buffer_size=64 << 10)
    sink = ChannelSink(writer, high_water_mark=0)  # every write waits until its bytes are handed to the writer
    writing = asyncio.ensure_future(sink.write(b"a" * BLOCK))
    try:
        await until(lambda: writer.buffered_bytes > 0)  # its bytes are going out; nobody reads yet
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(writing, 10)
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(ChannelSource(reader, require_trailer=True).read_all(), 10)
        with pytest.raises(ChannelClosedError):  # the retry is refused, not sent a second time
            await sink.write(b"a" * BLOCK)
    finally:
        await sink.abort("test over")


async def test_a_write_cancelled_while_still_queued_is_withdrawn_and_its_retry_sent_once(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay, buffer_size=64 << 10)
    first, second = b"1" * BLOCK, b"2" * BLOCK
    sink = ChannelSink(writer, high_water_mark=BLOCK)
    try:
        await sink.write(first)  # queued: at the mark, not past it
        writing = asyncio.ensure_future(sink.write(second))  # past it: waits behind the first, which nobody reads
        await until(lambda: writer.buffered_bytes > 0)
        assert writer.bytes_written == 0, "the first block went out whole: the second may have been taken"
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(writing, 10)
        assert sink.queued_bytes == BLOCK  # the first only

        async def retry_then_close() -> None:
            await sink.write(second)
            await sink.close()

        source = ChannelSource(reader, require_trailer=True)
        data, _ = await asyncio.wait_for(asyncio.gather(source.read_all(), retry_then_close()), 20)
    finally:
        await sink.abort("test over")
    assert len(data) == 2 * BLOCK and data == first + second
    assert source.verified
