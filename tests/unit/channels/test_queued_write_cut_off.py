"""A queued write (``stream.write`` or ``send_message`` on the writer's loop) cut off while its frames go out, by the
end of its loop (an ``asyncio.run`` that returns cancels it): the stream is aborted, as for an awaited ``write``
cut off the same way. Before, the queue's pump just stopped: the reader, with part of the stream, waited with no
end (the socket stayed open on the closed loop until collected), even when ``close()`` had been called.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from iii.channels import ChannelAbortedError, ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread


async def _first_chunk_then_to_the_end(reader: ChannelReader, first: threading.Event, go_on: asyncio.Event) -> int:
    """Reads one chunk, then waits for ``go_on``: the writer is stuck behind full buffers meanwhile."""
    count = 0
    async for chunk in reader:
        count += len(chunk)
        first.set()
        await go_on.wait()
    return count


def _write_queued_and_return(writer: ChannelWriter, first: threading.Event, close: bool) -> None:
    async def main() -> None:
        writer.stream.write(bytes(32 << 20))  # far more than the buffers on the way hold
        if close:
            writer.close()
        await asyncio.to_thread(first.wait, 10)  # the reader has part of it: asyncio.run cancels the rest

    asyncio.run(main())


@pytest.mark.parametrize("close", [False, True], ids=["unclosed", "closed"])
async def test_a_queued_write_cut_off_by_its_loops_end_aborts_the_stream(
        relay: tuple[str, ChannelRelay], close: bool) -> None:
    writer, reader = _ends(*relay)
    first, go_on = threading.Event(), asyncio.Event()
    read = asyncio.ensure_future(_first_chunk_then_to_the_end(reader, first, go_on))
    await _in_thread(lambda: _write_queued_and_return(writer, first, close))
    assert first.is_set()
    go_on.set()
    with pytest.raises(ChannelAbortedError):  # its reason, or "writer connection dropped" if its Close was stuck
        await asyncio.wait_for(read, 10)
    assert writer._end is not None
    assert writer._end.ws.transport.get_extra_info("socket").fileno() == -1  # not left open on the closed loop
