"""``await writer.write(data)`` takes bytes-like data only, as ``writer.stream.write`` does. With writes queued
ahead of it, ``bytes(data)`` sent five zero bytes for ``5``; with none, the ``TypeError`` came only after the
writer had connected. Refused before anything is queued or connected; the writer stays usable, and a
memoryview still goes out without a copy of its own."""

from __future__ import annotations

import asyncio

import pytest

from iii_channels import ChannelSink, ChannelSource
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

_MESSAGE = "ChannelWriter.write takes bytes-like data or a str (sent as a text message), not int"


async def test_write_of_an_int_behind_queued_bytes_is_refused() -> None:
    async with local_channel() as ch:
        ch.writer.stream.write(b"A")  # queued: the writer's queue sends what comes after it
        with pytest.raises(TypeError, match="sent as a text message"):
            await ch.writer.write(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not list"):
            await ch.writer.write([66, 67])  # type: ignore[arg-type]
        await ch.writer.write(bytearray(b"B"))
        await ch.writer.close_async()
        assert await asyncio.wait_for(ch.reader.read_all(), 10) == b"AB"  # before: b'A\x00\x00\x00\x00\x00...'


async def test_a_first_write_of_an_int_is_refused_before_connecting() -> None:
    async with local_channel() as ch:
        with pytest.raises(TypeError) as caught:
            await ch.writer.write(5)  # type: ignore[arg-type]
        assert str(caught.value) == _MESSAGE
        assert ch.writer._end is None and not ch.writer._connect.under_way  # before: connected first
        await ch.writer.write(memoryview(b"--cd")[2:])
        await ch.writer.close_async()
        assert await asyncio.wait_for(ch.reader.read_all(), 10) == b"cd"


async def test_the_sink_refuses_an_int_as_before() -> None:
    async with local_channel() as ch:
        async with ChannelSink(ch.writer) as sink:
            with pytest.raises(TypeError, match="^ChannelSink.write takes bytes-like data, not int "
                                                r"\(use send_text for text messages\)$"):
                await sink.write(5)  # type: ignore[arg-type]
            await sink.write(memoryview(b"--ab")[2:])
        assert await asyncio.wait_for(ChannelSource(ch.reader).read_all(), 10) == b"ab"
