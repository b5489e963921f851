"""A channel end bound to a loop before it had a socket (its first read or write cancelled before it connected,
under an ``asyncio.run`` that returned) moves to the next loop that uses it: nothing of it went with the first
loop. Before, it raised ChannelLoopError claiming "its socket went with that loop". An end whose socket did go
with a closed loop still says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii.channels import ChannelConnectionError, ChannelLoopError, ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread
from .test_sync_writer_without_loop import _drop_socket


def _cancel_before_it_connects(first_use: Callable[[], Awaitable[Any]]) -> None:
    """``first_use()`` on a loop of its own (``asyncio.run``), cancelled after its first step: bound to that loop,
    its connect started and cancelled."""
    async def cancelled() -> None:
        task = asyncio.ensure_future(first_use())
        await asyncio.sleep(0)  # one step of the task: it binds the end and starts its connect
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())


def _left_without_socket(end: ChannelReader | ChannelWriter) -> None:
    assert end._end is None and end._home.loop is not None and end._home.loop.is_closed()


async def test_a_reader_whose_first_read_was_cancelled_reads_on_the_next_loop(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    await _in_thread(lambda: _cancel_before_it_connects(reader.recv))
    _left_without_socket(reader)
    read = asyncio.ensure_future(reader.read_all())
    await writer.write(b"all of it")
    await writer.close_async()
    assert await asyncio.wait_for(read, 10) == b"all of it"
    assert reader._home.loop is asyncio.get_running_loop()


async def test_a_writer_whose_first_write_was_cancelled_writes_on_the_next_loop(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    await _in_thread(lambda: _cancel_before_it_connects(lambda: writer.write(b"never sent")))
    _left_without_socket(writer)
    read = asyncio.ensure_future(reader.read_all())
    async with writer:
        await writer.write(b"all of it")
    assert await asyncio.wait_for(read, 10) == b"all of it"


async def test_a_writer_whose_first_sync_write_failed_moves_off_its_private_loop() -> None:
    """Nothing listens: the sync write fails to connect and leaves a private loop with no socket on it; async
    code on another loop then uses the writer (and gets the connect's error again, not a loop error), and the
    private loop is closed as the writer leaves it."""
    writer = ChannelWriter("ws://127.0.0.1:9", {"channel_id": "c1", "access_key": "k", "direction": "write"})
    with pytest.raises(ChannelConnectionError, match="cannot connect"):
        await _in_thread(lambda: writer.stream.write(b"x"))
    private = writer._home.loop
    assert private is not None and not private.is_closed()
    with pytest.raises(ChannelConnectionError, match="cannot connect"):
        await writer.write(b"x")
    assert writer._home.loop is asyncio.get_running_loop() and private.is_closed()


async def test_an_end_whose_socket_went_with_its_loop_still_says_so(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    await _in_thread(lambda: asyncio.run(writer.write(b"ab")))
    with pytest.raises(ChannelLoopError, match="its socket went with that loop"):
        await writer.write(b"c")
    _drop_socket(writer)
    await reader.close_async()
