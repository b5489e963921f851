"""ChannelSource readers through a real engine with text messages and the end of stream interleaved with bytes:
a text message that arrives just before the end, a text set aside by a byte read when the end arrives, a text
between two halves of a line. No reader may lose a text or hand it back out of order."""

from __future__ import annotations

import pytest

from iii.iii import III
from iii_channels import ChannelSink, ChannelSource, IncompleteReadError

pytestmark = pytest.mark.timeout(30)

# One stream, in writing order: bytes are ``bytes``, text messages ``str``.
Stream = list[bytes | str]


async def _source(worker: III, stream: Stream, *, trailer: bool) -> ChannelSource:
    """A source whose writer has sent ``stream`` and closed (with or without the integrity trailer).

    The whole stream is written before the reader starts, so every message is waiting when the reader asks:
    the order the reader sees them in is the order on the wire, not a race with the writer.
    """
    channel = await worker.create_channel_async()
    async with ChannelSink(channel.writer, trailer=trailer) as out:
        for part in stream:
            if isinstance(part, str):
                await out.send_text(part)
            else:
                await out.write(part)
    return ChannelSource(channel.reader, require_trailer=trailer)


async def _items(source: ChannelSource) -> Stream:
    """``source.items()`` with adjacent byte chunks joined: where a chunk ends is not the writer's to choose."""
    got: Stream = []
    async for item in source.items():
        if isinstance(item, bytes) and got and isinstance(got[-1], bytes):
            got[-1] += item
        else:
            got.append(item)
    return got


trailers = pytest.mark.parametrize("trailer", [False, True], ids=["no-trailer", "trailer"])


@trailers
async def test_next_message_returns_a_text_that_arrives_just_before_the_end(worker: III, trailer: bool) -> None:
    """Before: the first call returned ``None`` (end of stream) and only a second call the text."""
    source = await _source(worker, [b"data", "last"], trailer=trailer)
    assert await source.next_message() == "last"
    assert await source.next_message() is None
    assert await source.read_all() == b"data"
    assert source.verified is trailer


@trailers
async def test_next_message_in_a_loop_that_stops_at_none_sees_every_text(worker: III, trailer: bool) -> None:
    source = await _source(worker, ["a", b"1", "b", b"2", "c"], trailer=trailer)
    texts = []
    while (text := await source.next_message()) is not None:
        texts.append(text)
    assert texts == ["a", "b", "c"]
    assert await source.read_all() == b"12"


@trailers
async def test_messages_sees_a_text_that_arrives_just_before_the_end(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"data", "last"], trailer=trailer)
    assert [text async for text in source.messages()] == ["last"]
    assert await source.read_all() == b"data"


@trailers
async def test_texts_between_halves_of_lines_keep_for_next_message(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"ab", "T", b"c\nd", "U"], trailer=trailer)
    assert [line async for line in source.lines()] == [b"abc\n", b"d"]
    assert [await source.next_message(), await source.next_message(), await source.next_message()] == [
        "T", "U", None]


@trailers
async def test_items_after_a_line_read_keeps_the_writing_order(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"a\nb", "T", b"c\n", "U"], trailer=trailer)
    assert await source.readline() == b"a\n"
    assert await _items(source) == [b"b", "T", b"c\n", "U"]


@trailers
async def test_items_after_a_line_across_a_text(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"a", "T", b"b\nc", "U", b"d"], trailer=trailer)
    assert await source.readline() == b"ab\n"
    assert await _items(source) == ["T", b"c", "U", b"d"]


@trailers
async def test_items_after_the_end_arrived_while_a_text_was_set_aside(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"ab", "T"], trailer=trailer)
    with pytest.raises(IncompleteReadError) as caught:
        await source.readexactly(3)
    assert caught.value.partial == b"ab"
    assert await _items(source) == ["T"]


@trailers
async def test_readuntil_at_the_end_leaves_the_text_for_next_message(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"ab", "T", b"c"], trailer=trailer)
    with pytest.raises(IncompleteReadError) as caught:
        await source.readuntil(b"\r\n")
    assert caught.value.partial == b"abc"
    assert await source.next_message() == "T"
    assert await source.next_message() is None


@trailers
async def test_read_across_texts_then_messages(worker: III, trailer: bool) -> None:
    source = await _source(worker, ["a", b"xy", "b", b"z", "c"], trailer=trailer)
    assert [await source.read(1), await source.read(5), await source.read(5), await source.read(5)] == [
        b"x", b"y", b"z", b""]
    assert [text async for text in source.messages()] == ["a", "b", "c"]


@trailers
async def test_chunks_then_items_yield_the_texts_left(worker: III, trailer: bool) -> None:
    source = await _source(worker, ["a", b"xy", "b", b"z", "c"], trailer=trailer)
    assert [chunk async for chunk in source.chunks()] == [b"xy", b"z"]
    assert await _items(source) == ["a", "b", "c"]


@trailers
async def test_next_message_then_items_keep_the_order(worker: III, trailer: bool) -> None:
    source = await _source(worker, [b"x", "a", b"y", "b", b"z"], trailer=trailer)
    assert await source.next_message() == "a"
    assert await _items(source) == [b"xy", "b", b"z"]
