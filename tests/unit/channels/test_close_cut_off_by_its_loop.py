"""A close that its loop's end cancels (``close()`` fire-and-forget, then the ``asyncio.run`` returns): the writer's
connection is dropped rather than left open on the closed loop, where nothing could close it any more. The reader
gets the end of stream at once if the Close frame got out (as here), an abort if not. Before, the socket stayed
open until collected: the engine's side of it waited for the TCP close that follows a close handshake
(websockets' close_timeout, 10 s) before the reader got its end.
"""

from __future__ import annotations

import asyncio

from iii.channels import ChannelWriter
from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends, _in_thread


def _write_close_and_return(writer: ChannelWriter) -> None:
    async def main() -> None:
        await writer.write(b"connected")
        writer.stream.write(b" and queued")
        writer.close()  # fire-and-forget: it waits for the queue's pump when asyncio.run cancels it

    asyncio.run(main())


async def test_a_close_cancelled_by_its_loops_end_drops_the_connection(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    await _in_thread(lambda: _write_close_and_return(writer))
    assert await asyncio.wait_for(read, 5) == b"connected and queued"  # its Close frame was out in time
    assert writer._end is not None
    assert writer._end.ws.transport.get_extra_info("socket").fileno() == -1  # not left open on the closed loop
