"""Writer sockets held by a worker's share of held bytes keep no message of their own (attack report on channels,
p27).

Before, a socket held back stopped reading only once its next message had come whole: each held writer kept its
~1 MiB (the SDK's 960 KiB frames) besides the share, uncounted. One worker's 200 writers with no reader took the
engine +279 MiB, 600 took +685 MiB, with a 64 MiB share. Now every writer socket of a worker stops reading the
moment its share is reached (and one attaching then reads nothing): 200 writers +91 MiB, 600 +96 MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from iii.iii import III
from iii_engine import Engine
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024
SHARE = 8 * MIB
WRITERS = 24
BLOCKS = 3  # 1 MiB each


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[III]:
    engine.channels.max_held_bytes_per_worker = SHARE  # read when the worker's first channel is made
    client = III(engine.url)
    await client.connect_async()
    yield client
    await client.shutdown_async()


def _writer_sockets_held(engine: Engine, channel_ids: list[str]) -> bool:
    """Every channel's writer attached and its socket not read."""
    relay = engine.channels
    for channel_id in channel_ids:
        ch = relay._channels.get(channel_id)
        if ch is None or ch.writer_end is None:
            return False
        if ch.writer_end.ws.transport.is_reading():  # type: ignore[attr-defined]
            return False
    return True


async def test_held_writers_sockets_keep_no_message_past_the_share_and_streams_arrive_whole(engine: Engine,
                                                                                           worker: III) -> None:
    """Before: the 24 held sockets kept ~0.9 MiB unread each (~20 MiB past the 8 MiB share)."""
    channels = [await worker.create_channel_async() for _ in range(WRITERS)]
    ids = [channel.writer_ref.channel_id for channel in channels]
    streams = [[bytes([n, k]) * (MIB // 2) for k in range(BLOCKS)] for n in range(WRITERS)]

    async def write(n: int) -> None:
        for block in streams[n]:
            await channels[n].writer.write(block)
        await channels[n].writer.close_async()

    writing = [asyncio.ensure_future(write(n)) for n in range(WRITERS)]
    try:
        await until(lambda: _writer_sockets_held(engine, ids), 15)
        relay = engine.channels
        queued = relay.held_stats()["by_worker"]
        assert list(queued.values()) and max(queued.values()) >= SHARE  # the share is spent
        in_sockets = sum(relay.stats(channel_id)["socket_bytes"] or 0 for channel_id in ids)
        held = relay.held_bytes()
        # the share, the message that crossed it, and the message a reader's room let through: no message per socket
        assert held + in_sockets <= SHARE + 2 * MIB, (held, in_sockets)

        # readers attach: every stream arrives byte for byte
        got = await asyncio.wait_for(asyncio.gather(*(channel.reader.read_all() for channel in channels)), 20)
        for n, data in enumerate(got):
            assert hashlib.sha256(data).digest() == hashlib.sha256(b"".join(streams[n])).digest(), n
        await asyncio.wait_for(asyncio.gather(*writing), 10)
        assert relay.held_bytes() == 0
    finally:
        for task in writing:
            task.cancel()
        await asyncio.gather(*writing, return_exceptions=True)
