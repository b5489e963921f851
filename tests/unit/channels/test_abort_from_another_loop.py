"""A writer's abort awaited on an event loop the writer does not belong to (first used from sync code, then in an
``async with`` whose body raised): the abort is never lost. Before, ``abort()`` raised ChannelLoopError, which
replaced the body's exception and left the writer open, so a later sync ``close()`` delivered the bytes written so
far to the reader as a complete stream.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server
from .test_sync_calls import _ends, _in_thread


class BodyFailed(Exception):
    pass


async def _raise_in_async_with(writer: ChannelWriter) -> None:
    with pytest.raises(BodyFailed, match="the body's own error"):
        async with writer:
            raise BodyFailed("the body's own error")
    assert writer.closed


async def _reader_sees_the_abort(reader: ChannelReader, read: asyncio.Future[bytes]) -> None:
    with pytest.raises(ChannelAbortedError):
        await asyncio.wait_for(read, 10)
    await reader.close_async()


async def test_an_async_with_on_another_loop_aborts_a_writer_on_its_private_loop(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _in_thread(lambda: writer.stream.write(b"the first half"))  # a private loop, in that thread
    await _raise_in_async_with(writer)
    with pytest.raises(ChannelClosedError, match=f"channel {writer.ref.channel_id} aborted"):
        await _in_thread(writer.close)  # raises, never hands the first half over as the whole stream
    await _reader_sees_the_abort(reader, read)
    assert writer._home.loop is not None and writer._home.loop.is_closed()  # released with the abort


async def test_an_abort_from_another_loop_cuts_a_sync_write_running_on_the_private_loop() -> None:
    """The private loop is busy in another thread (a sync write waiting on a full channel): the abort is handed
    to that running loop instead of waiting for the write, which ends with the abort's error."""
    async with relay_server(ChannelRelay(max_queued_bytes=1 << 20, max_message_size=4 << 20)) as (base, r):
        writer, reader = _ends(base, r)
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                writer.stream.write(bytes(64 << 20))  # far more than the buffers on the way hold
            except BaseException as exc:
                failure.append(exc)

        producing = asyncio.ensure_future(_in_thread(produce))
        await asyncio.wait_for(r.wait_full(writer.ref.channel_id), 20)
        assert not producing.done()
        await asyncio.wait_for(writer.abort("stopped from elsewhere"), 10)
        await asyncio.wait_for(producing, 10)
        assert [type(exc) for exc in failure] == [ChannelClosedError]
        with pytest.raises(ChannelAbortedError):  # its Close frame stuck behind the full socket: dropped
            await asyncio.wait_for(reader.read_all(), 10)
        assert writer._home.loop is not None and writer._home.loop.is_closed()


async def test_an_abort_from_another_loop_runs_on_the_writers_loop_in_another_thread(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    home = asyncio.new_event_loop()
    thread = threading.Thread(target=home.run_forever, name="writer-loop")
    thread.start()
    try:
        first = asyncio.run_coroutine_threadsafe(writer.write(b"partial"), home)
        await asyncio.wait_for(asyncio.wrap_future(first), 10)
        await _raise_in_async_with(writer)
        with pytest.raises(ChannelClosedError, match="aborted"):
            await writer.write(b"more")
        await _reader_sees_the_abort(reader, read)
    finally:
        home.call_soon_threadsafe(home.stop)
        thread.join(5)
        home.close()


async def test_an_abort_after_the_writers_loop_closed_drops_the_connection(relay: tuple[str, ChannelRelay]) -> None:
    """Nobody can run a closed loop: the connection is dropped from here, which the engine takes as an abort."""
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _in_thread(lambda: asyncio.run(writer.write(b"partial")))
    await _raise_in_async_with(writer)
    await _reader_sees_the_abort(reader, read)
    with pytest.raises(ChannelClosedError, match="aborted"):
        await _in_thread(writer.close)
