"""A writer whose private loop still has a task left on it moves to the next loop that uses it, and that private
loop is closed in a thread of its own meanwhile. Closing it drops the writer's socket only if that socket is on
it: the socket the writer has since opened on its new loop is left alone (it was dropped from that thread, and
the stream with it).
"""

from __future__ import annotations

import asyncio
import threading

from iii_engine.channels import ChannelRelay

from .test_sync_calls import _ends


async def test_closing_the_private_loop_left_behind_keeps_the_new_loops_socket(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(*relay)
    read = asyncio.ensure_future(reader.read_all())
    connected = threading.Event()
    private = writer._home.loop = writer._home._private = asyncio.new_event_loop()

    async def left_on_it() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:  # its loop's closing waits here until the writer has its new socket
            await private.run_in_executor(None, connected.wait, 10)

    left = private.create_task(left_on_it())
    # started, in a thread (no loop can run where one runs): a task cancelled before it ran would skip its except
    await asyncio.to_thread(private.run_until_complete, asyncio.sleep(0))
    before = set(threading.enumerate())
    await writer.write(b"on the new loop")  # moves here (the private loop is not running), then connects
    releasing = [t for t in set(threading.enumerate()) - before if t.name == "iii-channel-writer-release"]
    assert len(releasing) == 1  # the private loop, with a task left on it, is being closed in that thread
    connected.set()
    await asyncio.to_thread(releasing[0].join, 10)
    assert private.is_closed() and left.done()
    await writer.close_async()
    assert await asyncio.wait_for(read, 10) == b"on the new loop"
