"""Attack on the deferred peer Close of fast channel sockets (cc6fb33): a writer's Close that arrives behind
messages the relay has not taken yet waits until they were taken. When the channel's queue is full and the reader
only reads once the writer is done (a handler that writes its answer, closes, and returns the reader's ref), nobody
takes them: the writer's close hangs until websockets' close timeout (10 s; then it aborts the connection and
returns without an error) although every message was received and is delivered later. Before that commit the
Close was answered at once (this test passes on cc6fb33~1 in 0.02 s)."""

from __future__ import annotations

import asyncio

from iii.channels import ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server


async def test_a_writer_closes_at_once_while_its_reader_has_not_started() -> None:
    async with relay_server(ChannelRelay()) as (base, relay):
        refs = relay.create(None, owner=None)  # the default queue: 64 messages
        writer = ChannelWriter(base, refs["writer"])
        for n in range(100):  # more than the queue holds, far less than the socket buffers do
            await writer.write(n.to_bytes(2, "big") * 512)
        try:
            await asyncio.wait_for(asyncio.shield(writer.close_async()), 3)
        except TimeoutError:
            closed_in_time = False
        else:
            closed_in_time = True
        reader = ChannelReader(base, refs["reader"])  # the reader starts once the writer is done
        data = await asyncio.wait_for(reader.read_all(), 15)
        assert data == b"".join(n.to_bytes(2, "big") * 512 for n in range(100))  # nothing lost either way
        assert closed_in_time, "the writer's close waited for a reader that had not started"
