"""The engine's stop while a channel's writer waits on a full queue whose reader never attached.

The relay stops reading a writer while the channel's queue is full: that is its backpressure. With no reader, nothing
ever makes room, and the engine's stop does not wake that writer loop: the websockets server's close waits for the
connection's handler, so ``Engine.stop()`` (and ``iii-engine`` on SIGTERM) waits for the channel's attach deadline,
300 s by default. A writer that streams into a function that never reads its reader is enough to get there. The README
promises that every wait on a peer during a stop is bounded.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from iii import III
from iii_engine import Engine
from iii_engine.config import ChannelSettings
from tests.conftest import engine_test_config

STOP_BOUND_S = 5.0  # the stop closes every socket within 2 s; this engine has no store that could hang
ATTACH_DEADLINE_S = 12.0  # the channel expires then, which ends the stop's wait today: keeps a failing run short


@pytest.mark.our_engine("stops an engine of its own")
@pytest.mark.xfail(strict=True, reason="the relay's writer loop waits for room that never comes; the stop does not "
                                       "wake it, so the server's close waits for the channel's attach deadline")
async def test_stop_is_bounded_with_a_writer_blocked_on_an_unattached_channel() -> None:
    config = engine_test_config(channels=ChannelSettings(attach_timeout_ms=int(ATTACH_DEADLINE_S * 1000)))
    engine = Engine(config=config)
    await engine.start()
    client = III(engine.url)
    stop: asyncio.Future[None] | None = None
    writing: asyncio.Future[None] | None = None
    try:
        await client.connect_async()
        channel = await client.create_channel_async()
        block = os.urandom(1 << 20)

        async def write_forever() -> None:
            while True:
                await channel.writer.write(block)

        writing = asyncio.ensure_future(write_forever())
        await asyncio.wait_for(engine.channels.wait_full(channel.writer.ref.channel_id), 10)
        stop = asyncio.ensure_future(engine.stop())
        done, _ = await asyncio.wait({stop}, timeout=STOP_BOUND_S)
        assert stop in done, f"Engine.stop() still running {STOP_BOUND_S:g} s later"
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await client.shutdown_async()
        # The attach deadline ends a stop still waiting, so the failing case leaves nothing running either.
        await asyncio.wait_for(stop if stop is not None else engine.stop(), ATTACH_DEADLINE_S + 5)
