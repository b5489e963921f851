"""An empty binary message is no end of stream (attack report on channels, 1).

A reference writer's ``write(b"")`` sends an empty binary frame, and ``b""`` is what ``ChannelSource.read(n)``
returns at the end: a ``while data := await src.read(n)`` loop stopped at it and handed out half the stream, not
verified, no error. Every reading API now skips empty binary messages; our writer's ``write(b"")`` sends nothing.
"""

from __future__ import annotations

import pytest
import websockets

from iii.channels import ChannelReader, build_channel_url
from iii.iii import III
from iii_channels import ChannelSource
from iii_channels.integrity import Digest

pytestmark = pytest.mark.timeout(30)

PARTS = (b"first-half;", b"", b"second-half", b"")
WHOLE = b"".join(PARTS)


async def _written_by_a_raw_writer(worker: III, engine_url: str) -> ChannelReader:
    """A channel whose stream a reference-like writer sent: the parts as they are (empty frames too), a valid
    trailer, a normal close; the whole stream waits in the engine before the reader starts."""
    channel = await worker.create_channel_async()
    ref = channel.writer_ref
    digest = Digest()
    async with websockets.connect(build_channel_url(engine_url, ref.channel_id, ref.access_key, "write")) as ws:
        for part in PARTS:
            digest.update(part)
            await ws.send(part)
        await ws.send(digest.trailer())
    return channel.reader


async def test_read_loop_gets_the_whole_stream_across_empty_messages(worker: III, engine_url: str) -> None:
    """Before: the loop returned b'first-half;' (11 of 22 bytes), verified False, no exception."""
    src = ChannelSource(await _written_by_a_raw_writer(worker, engine_url), require_trailer=True)
    got = b""
    while data := await src.read(65536):
        got += data
    assert (got, src.verified, src.at_eof) == (WHOLE, True, True)


async def test_every_reading_api_skips_empty_messages(worker: III, engine_url: str) -> None:
    reader = await _written_by_a_raw_writer(worker, engine_url)
    chunks = [chunk async for chunk in ChannelSource(reader, require_trailer=True).chunks()]
    assert b"" not in chunks and b"".join(chunks) == WHOLE

    reader = await _written_by_a_raw_writer(worker, engine_url)
    src = ChannelSource(reader, require_trailer=True)
    items = [item async for item in src.items()]
    assert b"" not in items and b"".join(i for i in items if isinstance(i, bytes)) == WHOLE and src.verified

    # The SDK's own reader: recv() and read_chunk() never hand out b"" (None is the end), nor does iteration.
    reader = await _written_by_a_raw_writer(worker, engine_url)
    received = []
    while (message := await reader.recv()) is not None:
        received.append(message)
    assert b"" not in received and b"".join(m for m in received if isinstance(m, bytes)) == WHOLE

    reader = await _written_by_a_raw_writer(worker, engine_url)
    got = b""
    while chunk := await reader.read_chunk():
        got += chunk
    assert got == WHOLE and reader.at_eof

    reader = await _written_by_a_raw_writer(worker, engine_url)
    assert b"" not in [chunk async for chunk in reader]


async def test_our_writer_sends_no_empty_frame(worker: III, engine_url: str) -> None:
    """write(b"") (and an empty bytearray or memoryview, and stream.write) sends nothing: a reference reader,
    which hands every frame to its caller, never sees an empty chunk from us."""
    channel = await worker.create_channel_async()
    ref = channel.reader_ref
    writer = channel.writer
    await writer.write(b"a")
    await writer.write(b"")
    await writer.write(bytearray())
    await writer.write(memoryview(b"xyz")[3:])
    writer.stream.write(b"")
    await writer.stream.drain()
    await writer.write(b"b")
    await writer.close_async()
    async with websockets.connect(build_channel_url(engine_url, ref.channel_id, ref.access_key, "read")) as ws:
        frames = [frame async for frame in ws]
    assert frames == [b"a", b"b"]
