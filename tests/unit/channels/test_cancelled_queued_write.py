"""An ``await writer.write(data)`` queued behind other writes (the queue's pump sends it) and cancelled there.
Before, only its future was cancelled: the data stayed queued and went out later, so a caller retrying the write
sent it twice (``b"CANCELLEDRETRY"``), the stream corrupted with no error anywhere.
"""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server
from .test_sync_calls import MIB, _ends
from .test_write_cancelled_part_way import _small_relay


async def test_a_queued_write_cancelled_before_it_went_out_is_never_sent() -> None:
    async with relay_server(_small_relay()) as (base, r):
        writer, reader = _ends(base, r)
        head = bytes(range(256)) * (16 * MIB // 256)
        writer.stream.write(head)  # the pump sends it; the reader does not read yet
        await asyncio.wait_for(r.wait_full(writer.ref.channel_id), 20)
        queued = asyncio.ensure_future(writer.write(b"CANCELLED"))
        await asyncio.sleep(0)  # lets it queue behind the head
        assert not queued.done() and writer.pending_bytes == len(head) + len(b"CANCELLED")
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        read = asyncio.ensure_future(reader.read_all())
        await asyncio.wait_for(writer.write(b"RETRY"), 10)  # the caller retries the write it gave up
        await asyncio.wait_for(writer.close_async(), 10)
        received = await asyncio.wait_for(read, 10)
        assert received[len(head):] == b"RETRY" and received[:len(head)] == head
        assert writer.bytes_written == len(head) + len(b"RETRY") and writer.pending_bytes == 0


async def test_a_queued_write_cancelled_while_its_frames_go_out_aborts_the_stream() -> None:
    """As a direct write's: its caller cannot tell how much of it went out, so no close may deliver the stream."""
    async with relay_server(_small_relay()) as (base, r):
        writer, reader = _ends(base, r)
        writer.stream.write(b"head")  # the pump runs: the write below is queued, not sent directly
        writing = asyncio.ensure_future(writer.write(bytes(64 * MIB)))
        await asyncio.wait_for(r.wait_full(writer.ref.channel_id), 20)  # its frames are going out
        assert not writing.done()
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        read = asyncio.ensure_future(reader.read_all())
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(read, 20)
        with pytest.raises(ChannelClosedError, match="aborted"):
            await asyncio.wait_for(writer.close_async(), 10)
        with pytest.raises(ChannelClosedError, match="aborted"):
            await writer.write(b"more")


async def test_the_reviewers_repro(relay: tuple[str, ChannelRelay]) -> None:
    """The report's case as written: a write given up by ``wait_for`` behind 8 MiB, then retried."""
    writer, reader = _ends(*relay)
    writer.stream.write(b"A" * (8 << 20))
    queued = asyncio.ensure_future(writer.write(b"CANCELLED"))
    await asyncio.sleep(0)
    assert not queued.done()
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.wait_for(writer.write(b"RETRY"), 10)
    writer.close()
    data = b"".join([bytes(c) async for c in reader])
    assert data[8 << 20:] == b"RETRY"
