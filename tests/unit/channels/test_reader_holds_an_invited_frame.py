"""A channel reader's socket holds one unread frame of the largest invited size without being paused.

Its receive buffer was exactly 1 MiB, and one unread 1 MiB message (with its per-message charge) was over it: the
reader stopped and restarted reading its socket after every such frame, once the engine invited 1 MiB frames
(writer, relay and reader in one process: 1.4x the CPU per GiB)."""

from __future__ import annotations

from iii.channel_end import INVITED_FRAME_SIZES
from iii.channels import ChannelReader, ChannelWriter
from iii.ws_fastpath import DEFAULT_RECEIVE_BUFFER, MESSAGE_CHARGE, _FastReceive
from iii_engine import Engine
from iii_engine.config import EngineConfig
from tests.polling import until

FRAME = INVITED_FRAME_SIZES[1]


def test_the_receive_buffer_holds_the_largest_invited_frame() -> None:
    assert DEFAULT_RECEIVE_BUFFER >= FRAME + MESSAGE_CHARGE


async def test_one_unread_invited_frame_leaves_the_socket_read_and_two_pause_it() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        refs = engine.channels.create(None, owner=None)
        writer, reader = ChannelWriter(engine.url, refs["writer"]), ChannelReader(engine.url, refs["reader"])
        try:
            await writer.write(b"a")
            assert await reader.read_chunk() == b"a"  # (connected; its socket is read)
            assert reader._end is not None
            ws = reader._end.ws
            assert isinstance(ws, _FastReceive)
            await writer.write(b"b" * FRAME)
            await until(lambda: ws._inbox_bytes == FRAME)
            assert ws.transport.is_reading()
            await writer.write(b"c" * FRAME)  # past the buffer: the bound still holds
            await until(lambda: ws._inbox_bytes == 2 * FRAME)
            assert not ws.transport.is_reading()
            assert await reader.read_chunk() == b"b" * FRAME
            assert await reader.read_chunk() == b"c" * FRAME
        finally:
            await writer.close_async()
            await reader.close_async()
