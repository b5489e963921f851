"""An engine's channel relay holds at most a worker's share of parked bytes (attack report on channels, 2).

Before, one worker's 40 channels written with 16 MiB each and closed, with no reader, took an engine from 47 to
687 MiB for the attach deadline (300 s). Now the engine stops reading a worker's writers once its channels hold
``max_held_bytes_per_worker`` (64 MiB by default); the rest waits in the writers, nothing is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from iii.iii import III
from iii_engine import Engine

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[III]:
    client = III(engine.url)
    await client.connect_async()
    yield client
    await client.shutdown_async()


async def test_one_workers_parked_streams_stop_at_its_share_and_arrive_whole_later(engine: Engine,
                                                                                     worker: III) -> None:
    """Before: the five channels' queues held 80 MiB (16 MiB each), past the 64 MiB share."""
    share = 64 * MIB  # channels.max_held_bytes_per_worker's default
    channels = [await worker.create_channel_async() for _ in range(5)]
    streams = [[bytes([n, k]) * (512 * 1024) for k in range(16)] for n in range(5)]  # 16 MiB each

    async def write(n: int) -> None:
        for block in streams[n]:
            await channels[n].writer.write(block)
        await channels[n].writer.close_async()

    writing = [asyncio.ensure_future(write(n)) for n in range(5)]
    for channel in channels:  # each writer is no longer read: its stream is all queued, or it waits for room
        await asyncio.wait_for(engine.channels.wait_full(channel.writer_ref.channel_id), 20)
    held = engine.channels.held_bytes()
    assert share <= held <= share + MIB, held  # the share, and at most the message that crossed it
    for n, channel in enumerate(channels):
        got = await asyncio.wait_for(channel.reader.read_all(), 20)
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(streams[n])).digest()
    await asyncio.wait_for(asyncio.gather(*writing), 20)
    assert engine.channels.held_bytes() == 0
