"""A writer's first write cancelled once its TCP connection was made leaves the connect going on (the engine may
have attached the writer). Aborted meanwhile by an abort that is itself cancelled before the connect ends (a
timeout around both), nothing was left to end that socket as it connected: it stayed attached and the reader
waited for good. Now it is dropped as it connects, and the reader sees an abort."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from iii.channels import ChannelAbortedError, ChannelWriter
from iii_engine.testing import local_channel

pytestmark = [pytest.mark.our_engine("counts loop steps of an engine in this process"), pytest.mark.timeout(30)]


async def _steps_until(done: Callable[[], bool]) -> None:
    """Event-loop steps (the engine runs on this loop) until ``done()``."""
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def _cut_connect(writer: ChannelWriter) -> None:
    """A first write cancelled once its TCP connection is made: the connect goes on with nobody waiting."""
    write = asyncio.ensure_future(writer.write(b"x"))
    await _steps_until(lambda: writer._connect._made)
    assert writer._end is None
    write.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await write


async def test_an_abort_cancelled_while_the_cut_connect_goes_on_still_reaches_the_reader() -> None:
    async with local_channel() as ch:
        reading = asyncio.ensure_future(ch.reader.read_all())
        await _cut_connect(ch.writer)
        abort = asyncio.ensure_future(ch.writer.abort("gave up"))
        await _steps_until(lambda: ch.writer._connect._waiters > 0)
        assert ch.writer._end is None  # the abort waits for the connect
        abort.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abort
        with pytest.raises(ChannelAbortedError):
            await asyncio.wait_for(reading, 10)  # before: TimeoutError, the socket attached with nothing to end it


async def test_a_close_after_the_cut_connect_still_delivers() -> None:
    """The drop is only for a socket nobody will use: a close waiting for the connect sends its end-of-stream."""
    async with local_channel() as ch:
        reading = asyncio.ensure_future(ch.reader.read_all())
        await _cut_connect(ch.writer)
        await ch.writer.write(b"ab")
        await ch.writer.close_async()
        assert await asyncio.wait_for(reading, 10) == b"ab"
