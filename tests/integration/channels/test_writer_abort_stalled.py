"""A writer's ``abort()`` behind a reader that stopped reading: websockets' close waits, with no deadline, for the
socket to drain before it writes its Close frame, so ``abort()`` never returned (over 80 s measured), and with it
every adapter that aborts when cancelled mid-transfer. It now drops the connection once its Close frame could not be
written within a bound, and the reader still learns that the writer aborted."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from iii import channels as channels_module
from iii.channels import ChannelAbortedError
from iii.iii import III
from iii_engine import Engine

pytestmark = [pytest.mark.our_engine("reads the abort through our relay"), pytest.mark.timeout(30)]


async def test_abort_returns_behind_a_reader_that_stopped_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_CLOSE_S", 0.5)
    async with Engine(port=0) as engine:
        worker = III(engine.url)
        await worker.connect_async()
        try:
            channel = await worker.create_channel_async()
            blocked = asyncio.Event()

            async def produce() -> None:
                while True:
                    write = asyncio.ensure_future(channel.writer.write(bytes(1 << 16)))
                    done, _ = await asyncio.wait({write}, timeout=0.5)
                    if not done:  # the reader's side is full: the writer waits for its socket
                        blocked.set()
                    await write

            producer = asyncio.ensure_future(produce())
            await channel.reader.recv()  # attached, then never reads again
            await asyncio.wait_for(blocked.wait(), 20)
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
            await asyncio.wait_for(channel.writer.abort("gave up"), 5)
            # the reader, reading again, gets what was relayed and then the abort, never a clean end
            with pytest.raises(ChannelAbortedError):
                async with asyncio.timeout(15):
                    while True:
                        await channel.reader.recv()
        finally:
            await worker.shutdown_async()
