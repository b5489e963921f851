"""An async ``await writer.write(data)`` cancelled while its frames go out (no queue: the direct path). Before, the
frames sent so far stayed on the socket and a later close delivered them to the reader as a complete stream. A
write cancelled before any of its bytes went out leaves the writer usable.
"""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server
from .test_sync_calls import MIB, _ends


def _small_relay() -> ChannelRelay:
    return ChannelRelay(max_queued_bytes=MIB, max_message_size=4 * MIB)


async def test_a_write_cancelled_part_way_aborts_the_stream() -> None:
    async with relay_server(_small_relay()) as (base, r):
        writer, reader = _ends(base, r)
        writing = asyncio.ensure_future(writer.write(bytes(64 * MIB)))  # far more than the buffers on the way hold
        await asyncio.wait_for(r.wait_full(writer.ref.channel_id), 20)
        assert not writing.done()
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        read = asyncio.ensure_future(reader.read_all())
        with pytest.raises(ChannelClosedError, match="aborted"):
            await asyncio.wait_for(writer.close_async(), 10)
        with pytest.raises(ChannelClosedError, match="aborted"):
            await writer.write(b"more")
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(read, 10)
        assert writer._aborting is not None and writer._aborting.done()


async def test_a_write_cancelled_before_its_bytes_went_out_leaves_the_writer_usable() -> None:
    """The second write waits for the first one's frames (one write's frames are never interleaved): cancelled
    there, nothing of it was sent, and the stream goes on whole."""
    async with relay_server(_small_relay()) as (base, r):
        writer, reader = _ends(base, r)
        first = bytes(range(256)) * (64 * MIB // 256)
        writing = asyncio.ensure_future(writer.write(first))
        await asyncio.wait_for(r.wait_full(writer.ref.channel_id), 20)
        waiting = asyncio.ensure_future(writer.write(b"never sent"))
        await asyncio.sleep(0)  # lets it start and wait for the first write: nothing else to wait for
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        read = asyncio.ensure_future(reader.read_all())
        await asyncio.wait_for(writing, 10)
        await writer.write(b"tail")
        await asyncio.wait_for(writer.close_async(), 10)
        received = await asyncio.wait_for(read, 10)
        assert len(received) == len(first) + 4 and received == first + b"tail"
