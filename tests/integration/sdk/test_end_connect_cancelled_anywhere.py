"""A channel end's first call cancelled at every point of its connect (one event-loop step apart, engine and
client on one loop), then retried: the stream gets through whole. Cut once the engine had attached the end, the
connect dropped it: a reader's retry got ChannelInUseError and the writer ReaderGoneError (a writer's retry the
same), where a ``wait_for(reader.recv(), t)`` that times out is expected to leave the reader usable."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import pytest

from iii.channels import ReaderGoneError
from iii.types import Channel
from iii_engine.engine import Engine
from iii_engine.testing import local_channel

pytestmark = [pytest.mark.our_engine("counts loop steps of an engine in this process"), pytest.mark.timeout(30)]

_DATA = b"".join(b"%05d" % i for i in range(200))


def _attached(engine: Engine, channel: Channel, side: Literal["reader", "writer"]) -> bool:
    live = engine.channels._channels.get(channel.reader.ref.channel_id)
    return live is not None and getattr(live, f"{side}_end") is not None


async def _cancelled_after(steps: int, channel: Channel, engine: Engine,
                           side: Literal["reader", "writer"]) -> str:
    """The first call of ``side`` cancelled after ``steps`` loop steps, then the transfer retried; returns where
    the cancel landed."""
    end = channel.reader if side == "reader" else channel.writer
    first = asyncio.ensure_future(channel.reader.recv() if side == "reader" else channel.writer.write(_DATA[:1]))
    for _ in range(steps):
        await asyncio.sleep(0)
    if end._end is not None:
        where = "connected"
    elif _attached(engine, channel, side):
        where = "attached by the engine, connect not done"
    else:
        where = "before the engine attached"
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    sent = 1 if side == "writer" and not first.cancelled() else 0  # a write done before the cancel came

    async def write() -> None:
        await channel.writer.write(_DATA[sent:])
        await channel.writer.close_async()

    writing = asyncio.ensure_future(write())
    got = await asyncio.wait_for(channel.reader.read_all(), 10)
    await asyncio.wait_for(writing, 10)  # before: ReaderGoneError / ChannelInUseError
    assert got == _DATA, where
    return where


@pytest.mark.parametrize("side", ["reader", "writer"])
async def test_a_first_call_cancelled_anywhere_in_its_connect_leaves_the_end_usable(
        side: Literal["reader", "writer"]) -> None:
    async with local_channel() as ch:
        landed: list[str] = []
        steps = 0
        # every step until the connect was done before the cancel, twice in a row
        while landed[-2:] != ["connected", "connected"]:
            assert steps < 200, landed
            channel = ch if steps == 0 else await ch.iii.create_channel_async()
            landed.append(await _cancelled_after(steps, channel, ch.engine, side))
            steps += 1
        # the window that lost the stream was hit, at least once, by a step count
        assert "attached by the engine, connect not done" in landed, landed
        assert "before the engine attached" in landed, landed


async def test_a_reader_closed_while_its_cut_connect_goes_on_lets_the_writer_know() -> None:
    """The connect a cancelled read left going on, its reader closed meanwhile: its socket is dropped as it
    connects, so the writer hears the reader is gone (kept, the writer would wait on backpressure for good)."""
    async with local_channel() as ch:
        read = asyncio.ensure_future(ch.reader.recv())
        for _ in range(200):  # loop steps, as above: the engine runs on this loop
            if _attached(ch.engine, ch, "reader"):
                break
            await asyncio.sleep(0)
        assert ch.reader._end is None  # the engine attached it, its connect not done yet
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await read
        await ch.reader.close_async()
        with pytest.raises(ReaderGoneError):
            async with asyncio.timeout(10):
                while True:
                    await ch.writer.write(_DATA)
        end = ch.reader._end
        assert end is not None and not end.is_open
