"""Two tasks writing to one ``WritableStream`` and both waiting in ``drain()`` (Node-style backpressure). Before,
the second drain raised ``RuntimeError: Signal allows one waiter at a time`` instead of waiting, and its producer
gave up on a stream that was fine."""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def test_two_tasks_drain_one_stream_at_once_and_both_go_on() -> None:
    async with local_channel() as ch:
        stream = ch.writer.stream
        reading = asyncio.ensure_future(ch.reader.read_all())
        stream.write(b"h" * stream.high_water_mark)  # at the mark: every drain below waits for the pump
        drains = [asyncio.ensure_future(stream.drain()) for _ in range(3)]
        await asyncio.sleep(0)  # all three are waiting now, none done
        assert not any(drain.done() for drain in drains)
        await asyncio.wait_for(asyncio.gather(*drains), 10)  # before: RuntimeError for the second and third
        assert ch.writer.pending_bytes < stream.high_water_mark
        stream.end(b"tail")
        assert len(await asyncio.wait_for(reading, 10)) == stream.high_water_mark + 4


async def test_every_drain_waiter_gets_the_writers_error() -> None:
    async with local_channel() as ch:
        stream = ch.writer.stream
        stream.write(b"h" * stream.high_water_mark)
        drains = [asyncio.ensure_future(stream.drain()) for _ in range(2)]
        await asyncio.sleep(0)
        await ch.writer.abort("gave up")
        for drain in drains:
            with pytest.raises(ChannelClosedError, match="aborted"):
                await asyncio.wait_for(drain, 10)
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(ch.reader.read_all(), 10)
