"""The writer's sync API (``writer.stream.write`` / ``end``, ``send_message``, ``close``) used from plain sync code.

Where no event loop runs (a script's main thread, any thread of its own), each sync call falls back to
``asyncio.run`` of its own, as the reference SDK does: the first call connects the writer's socket inside a loop that
is closed as soon as the call returns, and the next call meets that socket from a new loop. Today the close raises
``RuntimeError: ... attached to a different loop`` and the reader never sees the end of the stream (it waits for
good while the writer's process lives). A writer used through more than one sync call must deliver its bytes and
its end like the async API does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay


def _ends(base: str, relay: ChannelRelay) -> tuple[ChannelWriter, ChannelReader]:
    refs = relay.create(None, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


def _drop_socket(channel_end: ChannelWriter | ChannelReader) -> None:
    """Shut an end's socket down by hand: one connected by a loop that is closed now can no longer close itself,
    and the relay server's stop would wait for it past the test's time limit."""
    end = channel_end._end
    sock = None if end is None else end.ws.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _write_then_end(writer: ChannelWriter) -> None:
    writer.stream.write(b"hello ")
    writer.stream.end(b"world")


def _write_write_close(writer: ChannelWriter) -> None:
    writer.stream.write(b"hello ")
    writer.stream.write(b"world")
    writer.close()


@pytest.mark.parametrize("produce", [_write_then_end, _write_write_close], ids=["write-end", "write-write-close"])
async def test_sync_writes_from_a_thread_without_a_loop_reach_the_reader(
        relay: tuple[str, ChannelRelay], produce: Callable[[ChannelWriter], None]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    try:
        # The producer runs where no loop is running, as in a script using the sync API.
        await asyncio.wait_for(asyncio.to_thread(produce, writer), 10)
        assert await asyncio.wait_for(read, 10) == b"hello world"
    finally:
        read.cancel()
        await asyncio.gather(read, return_exceptions=True)
        _drop_socket(writer)
        await reader.close_async()
