"""A str handed to the writer's ``write`` / ``stream.write`` / ``stream.end`` goes out as text, as the reference
SDK's writer sends it (its ``ws.send(str)``, in pieces of 65,536 characters): a drop-in caller that writes text got
``TypeError`` from ours. Bytes-like data is still binary, in order with the text, and anything else (an int:
``bytes(5)`` once sent five zero bytes) is still refused before anything is queued or connected.
"""

from __future__ import annotations

import asyncio

import pytest

from iii.channels import ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


async def _messages(reader: ChannelReader) -> list[bytes | str]:
    received: list[bytes | str] = []
    while (message := await asyncio.wait_for(reader.recv(), 10)) is not None:
        received.append(message)
    return received


def _write_everything(writer: ChannelWriter) -> None:
    """The sync API, with a loop running (queued) or none (sent before each call returns)."""
    assert writer.stream.write("naïve ✓") is True
    writer.stream.write(b"\x00bin")
    writer.stream.end("last")


@pytest.mark.parametrize("loop_running", [True, False], ids=["on-loop", "no-loop"])
async def test_stream_write_and_end_send_a_str_as_a_text_message(any_relay: tuple[str, ChannelRelay],
                                                                   loop_running: bool) -> None:
    base, relay = any_relay
    refs = relay.create(None, owner="w")
    writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])
    reading = asyncio.ensure_future(_messages(reader))
    if loop_running:
        _write_everything(writer)
    else:
        await asyncio.to_thread(_write_everything, writer)
    assert await reading == ["naïve ✓", b"\x00bin", "last"]


async def test_writer_write_sends_a_str_as_text_in_order(any_relay: tuple[str, ChannelRelay]) -> None:
    base, relay = any_relay
    refs = relay.create(None, owner="w")
    writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])
    texts: list[str] = []
    reader.on_message(texts.append)
    long_text = "é" * 70_000  # past the reference's 65 536-character pieces: cut as the reference cuts it
    reading = asyncio.ensure_future(reader.read_all())
    writer.stream.write(b"queued ")  # a write queued ahead: the str goes behind it
    await writer.write("header")  # type: ignore[arg-type]  # untyped drop-in code of the reference's
    await writer.write(b"body")
    await writer.write(long_text)  # type: ignore[arg-type]
    await writer.close_async()
    assert await asyncio.wait_for(reading, 10) == b"queued body"
    assert texts == ["header", "é" * 65_536, "é" * 4_464]


async def test_an_int_is_still_refused_and_nothing_is_sent() -> None:
    async with local_channel() as ch:
        with pytest.raises(TypeError, match=r"^ChannelWriter.write takes bytes-like data or a str \(sent as a text "
                                            r"message\), not int$"):
            await ch.writer.write(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^WritableStream.write takes bytes-like data or a str .*, not int$"):
            ch.writer.stream.write(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^WritableStream.end takes bytes-like data or a str .*, not list$"):
            ch.writer.stream.end([1, 2])  # type: ignore[arg-type]
        assert ch.writer._end is None and ch.writer.pending_bytes == 0
        await ch.writer.write("t")  # type: ignore[arg-type]  # untyped drop-in code
        await ch.writer.close_async()
        assert await _messages(ch.reader) == ["t"]
