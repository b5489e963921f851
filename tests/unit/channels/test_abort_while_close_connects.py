"""An abort while a close (or a write) waits for the writer's connect: the abort wins, as it does while the close
waits for the writes queued ahead of it. Before, the close went on once connected and sent end-of-stream, the
abort's Close came second and was dropped, and the reader got what was written as a complete stream, though
abort() had returned.
"""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread


async def _until_connecting(writer: ChannelWriter) -> None:
    """Until the writer's connect is under way (yields to the loop only: nothing to await for it)."""
    for _ in range(1000):
        if writer._connect.under_way:
            return
        await asyncio.sleep(0)
    raise AssertionError("the writer never started to connect")


async def test_an_abort_while_close_async_connects_is_not_an_end_of_stream(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    closing = asyncio.ensure_future(writer.close_async())
    await _until_connecting(writer)
    await asyncio.wait_for(writer.abort("changed my mind"), 10)
    with pytest.raises(ChannelClosedError, match="aborted"):
        await asyncio.wait_for(closing, 10)
    with pytest.raises(ChannelAbortedError, match="changed my mind"):
        await asyncio.wait_for(read, 10)


async def test_an_abort_while_a_write_connects_fails_that_write(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    writing = asyncio.ensure_future(writer.write(b"after the abort"))
    await _until_connecting(writer)
    await asyncio.wait_for(writer.abort("changed my mind"), 10)
    with pytest.raises(ChannelClosedError, match="aborted"):
        await asyncio.wait_for(writing, 10)
    with pytest.raises(ChannelAbortedError, match="changed my mind"):
        await asyncio.wait_for(read, 10)
    assert writer.bytes_written == 0


async def test_an_abort_from_another_loop_while_a_sync_close_connects(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    connecting = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_connect = ChannelWriter._ensure_connected

    async def connect_seen(self: ChannelWriter) -> object:
        loop.call_soon_threadsafe(connecting.set)
        return await real_connect(self)

    writer._ensure_connected = connect_seen.__get__(writer)  # type: ignore[method-assign]
    closing = asyncio.ensure_future(_in_thread(writer.close))
    await asyncio.wait_for(connecting.wait(), 10)
    await asyncio.wait_for(writer.abort("changed my mind"), 10)
    with pytest.raises(ChannelClosedError, match="aborted"):
        await asyncio.wait_for(closing, 10)
    with pytest.raises(ChannelAbortedError):
        await asyncio.wait_for(read, 10)
