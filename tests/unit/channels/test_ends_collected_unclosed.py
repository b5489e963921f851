"""Channel ends used on the caller's own loop and dropped without a close: once collected, their socket is dropped
(with a ResourceWarning naming the end, as asyncio's transports warn), and the engine sees it: a writer's reader
gets the abort, a reader's writer hears the reader is gone. Before, only a writer used from sync code (on a private
loop) was released; any other end kept its socket, attached, until its loop's transports went, and the other end
waited for good. That includes an end whose first connect was cut by its caller's cancellation once the TCP
connection was made: the connect goes on (the engine may have attached the end), and nothing ended that socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
import weakref
from collections.abc import Iterator

import pytest

from iii.channel_end import ChannelCloseCode, WebSocketEnd
from iii.channels import ChannelAbortedError, ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends
from .test_writer_aborted_while_cut_connect_goes_on import _steps_until

pytestmark = pytest.mark.timeout(30)


@contextlib.contextmanager
def _unclosed_warnings() -> Iterator[list[str]]:
    """The ResourceWarnings of unclosed channel ends raised in the body (garbage of earlier tests collected first,
    so that only this test's ends are seen)."""
    while gc.collect():
        pass
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
    seen.extend(str(w.message) for w in caught
                if issubclass(w.category, ResourceWarning) and "unclosed channel" in str(w.message))


def _collected(end: weakref.ref[object]) -> None:
    gc.collect()
    assert end() is None


async def test_a_writer_collected_unclosed_on_its_running_loop_aborts_the_stream(
        relay: tuple[str, ChannelRelay]) -> None:
    with _unclosed_warnings() as seen:
        writer, reader = _ends(*relay)
        reading = asyncio.ensure_future(reader.read_all())
        await writer.write(b"half of it")
        dropped = weakref.ref(writer)
        del writer
        _collected(dropped)
        with pytest.raises(ChannelAbortedError, match="writer"):
            await asyncio.wait_for(reading, 10)  # before: TimeoutError, the writer's socket stayed attached
    assert len(seen) == 1 and seen[0].startswith(f"unclosed channel writer {reader.ref.channel_id}: its connection")


async def test_a_reader_collected_unclosed_tells_the_writer_it_is_gone(relay: tuple[str, ChannelRelay]) -> None:
    with _unclosed_warnings() as seen:
        writer, reader = _ends(*relay)
        await writer.write(b"first")
        assert await asyncio.wait_for(reader.read_chunk(), 10) == b"first"
        socket_end = reader._end
        assert isinstance(socket_end, WebSocketEnd)
        dropped = weakref.ref(reader)
        del reader
        _collected(dropped)
        await asyncio.wait_for(socket_end.ws.wait_closed(), 10)  # before: TimeoutError, still open
        writer_end = writer._end
        assert writer_end is not None
        await asyncio.wait_for(writer_end.ws.wait_closed(), 10)  # the relay ended the writer: its reader left
        assert writer_end.ws.close_code == ChannelCloseCode.READER_GONE
    assert len(seen) == 1 and seen[0].startswith("unclosed channel reader ")


async def _other_end_gone(writer: ChannelWriter | None, reading: asyncio.Future[bytes] | None) -> None:
    """The engine saw the dropped end: a writer's reader (``reading``) gets the abort; a reader's ``writer`` is
    ended (4002)."""
    if reading is not None:
        with pytest.raises(ChannelAbortedError, match="writer"):
            await asyncio.wait_for(reading, 10)  # before: TimeoutError, the writer's socket stayed attached
        return
    assert writer is not None
    writer_end = writer._end
    assert writer_end is not None
    await asyncio.wait_for(writer_end.ws.wait_closed(), 10)  # before: TimeoutError, the reader stayed attached
    assert writer_end.ws.close_code == ChannelCloseCode.READER_GONE


async def _cut_connect_left_going_on(
        relay: tuple[str, ChannelRelay], side: str,
) -> tuple[weakref.ref[object], ChannelWriter | None, asyncio.Future[bytes] | None]:
    """An end (``side``) whose first call was cancelled once its TCP connection was made, the connect left to go on
    until its socket is attached, then nothing of that end held: its weak reference, and the other end's writer
    (reader dropped) or read (writer dropped). The other end attached first: the channel does not expire."""
    writer, reader = _ends(*relay)
    reading = None
    if side == "writer":
        reading = asyncio.ensure_future(reader.read_all())
        await _steps_until(lambda: reader._end is not None)
    else:
        await writer.write(b"x")
    end: ChannelWriter | ChannelReader = writer if side == "writer" else reader
    first = asyncio.ensure_future(writer.write(b"x") if side == "writer" else reader.recv())
    await _steps_until(lambda: end._connect._made)
    connecting = end._connect._future
    assert connecting is not None and end._end is None
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    socket_end = await asyncio.wait_for(asyncio.shield(connecting), 10)
    assert socket_end.is_open and end._end is socket_end  # attached, with nobody using it
    return weakref.ref(end), writer if side == "reader" else None, reading


@pytest.mark.parametrize("side", ["writer", "reader"])
async def test_an_end_whose_cut_connect_went_on_is_released_once_collected(relay: tuple[str, ChannelRelay],
                                                                          side: str) -> None:
    with _unclosed_warnings() as seen:
        dropped, writer, reading = await _cut_connect_left_going_on(relay, side)
        _collected(dropped)
        await _other_end_gone(writer, reading)
    assert len(seen) == 1 and seen[0].startswith(f"unclosed channel {side} ")


async def test_ends_closed_or_read_to_the_end_go_without_a_warning(relay: tuple[str, ChannelRelay]) -> None:
    with _unclosed_warnings() as seen:
        writer, reader = _ends(*relay)
        await writer.write(b"all")
        await writer.close_async()
        assert await asyncio.wait_for(reader.read_all(), 10) == b"all"
        ends = weakref.ref(writer), weakref.ref(reader)
        del writer, reader
        gc.collect()
        assert ends[0]() is None and ends[1]() is None
    assert seen == []
