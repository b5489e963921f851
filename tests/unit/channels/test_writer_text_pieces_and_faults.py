"""Text through the writer is encoded and checked at the call, and cut as the reference cuts it; writes after the
end are refused on a running loop too; a queue that fails drops its socket; a cancelled ``read_all`` keeps what it
read for the next read; ``ChannelSource.read_all(limit)`` counts what an earlier read left buffered.

Before: a str of more than 1 MiB went out as one text message, which the reference reader (websockets' 1 MiB
limit) took as the end of the stream; ``'\\ud800'`` was accepted and failed the queue later, with the reader waiting
for good; ``stream.write`` after ``stream.end`` returned True and its bytes went out after the end (or nowhere);
``pending_bytes`` counted a str's characters; a timed-out ``read_all`` dropped what it had read. (The write after a
1009: tests/integration/channels/test_write_after_the_engine_closed_the_writer.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from iii.channel_end import WebSocketEnd
from iii.channels import (
    ChannelAbortedError,
    ChannelClosedError,
    ChannelConnectionError,
    ChannelReader,
    ChannelWriter,
)
from iii_channels import ChannelSource, LimitExceededError
from iii_engine.channels import ChannelRelay

pytestmark = pytest.mark.timeout(30)


def _ends(served: tuple[str, ChannelRelay]) -> tuple[ChannelWriter, ChannelReader]:
    base, relay = served
    refs = relay.create(None, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


async def _messages(reader: ChannelReader) -> list[bytes | str]:
    received: list[bytes | str] = []
    while (message := await asyncio.wait_for(reader.recv(), 10)) is not None:
        received.append(message)
    return received


# ---- a long str goes out in pieces of 65,536 characters, in order, nothing between them


@pytest.mark.parametrize("how", ["write", "stream.write", "stream.end"])
async def test_a_long_str_goes_out_as_text_messages_of_65536_characters(any_relay: tuple[str, ChannelRelay],
                                                                        how: str) -> None:
    writer, reader = _ends(any_relay)
    reading = asyncio.ensure_future(_messages(reader))
    text = "".join(chr(0x61 + i % 26) for i in range(26)) * 10_000 + "é" * 9  # 260,009 characters
    writer.stream.write(b"before")  # queued ahead: the pieces go behind it
    if how == "write":
        await writer.write(text)  # type: ignore[arg-type]  # untyped drop-in code of the reference's
    elif how == "stream.write":
        writer.stream.write(text)
    else:
        writer.stream.end(text)
    if how != "stream.end":
        writer.stream.write(b"after")  # queued behind the pieces: never between two of them
        await writer.close_async()
    got = await reading
    pieces = [text[at : at + 65_536] for at in range(0, len(text), 65_536)]  # the reference's cut
    assert [len(piece) for piece in pieces] == [65_536, 65_536, 65_536, 63_401]
    assert got == [b"before", *pieces] + ([] if how == "stream.end" else [b"after"])


async def test_send_message_still_sends_one_message_never_cut(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(any_relay)
    reading = asyncio.ensure_future(_messages(reader))
    text = "é" * 70_000
    writer.send_message(text)
    await writer.send_message_async(text)
    await writer.close_async()
    assert await reading == [text, text]


# ---- a str that cannot be encoded is refused at the call, and the writer goes on


def _bad_calls(writer: ChannelWriter) -> dict[str, Callable[[str], object]]:
    return {"stream.write": writer.stream.write, "stream.end": writer.stream.end,
            "send_message": writer.send_message}


@pytest.mark.parametrize("call", ["stream.write", "stream.end", "send_message", "write", "send_message_async"])
async def test_a_str_with_a_lone_surrogate_is_refused_at_the_call_on_a_running_loop(
        any_relay: tuple[str, ChannelRelay], call: str) -> None:
    writer, reader = _ends(any_relay)
    reading = asyncio.ensure_future(_messages(reader))
    writer.stream.write(b"a")
    bad = "x" * 70_000 + "\ud800"  # in the second piece: the position is still the str's own
    with pytest.raises(UnicodeEncodeError) as caught:
        if call == "write":
            await writer.write(bad)  # type: ignore[arg-type]
        elif call == "send_message_async":
            await writer.send_message_async(bad)
        else:
            _bad_calls(writer)[call](bad)
    assert caught.value.start == 70_000
    api = {"stream.write": "WritableStream.write", "stream.end": "WritableStream.end"}.get(call,
                                                                                         f"ChannelWriter.{call}")
    assert caught.value.__notes__[0].startswith(f"{api}: a str sent as text must be UTF-8-encodable")
    assert writer.pending_bytes == 1  # nothing of it was queued
    writer.stream.write(b"b")  # the writer goes on
    writer.stream.end("end")
    assert await reading == [b"a", b"b", "end"]


async def test_a_str_with_a_lone_surrogate_is_refused_where_no_loop_runs(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(any_relay)
    reading = asyncio.ensure_future(_messages(reader))

    def sync_use() -> list[str]:
        refused = []
        for name, call in _bad_calls(writer).items():
            try:
                call("\ud800")
            except UnicodeEncodeError:
                refused.append(name)
        writer.stream.write(b"ok")
        writer.close()
        return refused

    assert await asyncio.to_thread(sync_use) == ["stream.write", "stream.end", "send_message"]
    assert await reading == [b"ok"]


async def test_a_queued_write_that_fails_in_this_process_drops_the_socket(relay: tuple[str, ChannelRelay],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    send = WebSocketEnd.send

    async def failing_send(self: WebSocketEnd, data: bytes | memoryview, *, text: bool = False) -> None:
        if bytes(data) == b"boom":
            raise RuntimeError("a fault of this process")
        await send(self, data, text=text)

    monkeypatch.setattr(WebSocketEnd, "send", failing_send)
    writer, reader = _ends(relay)
    reading = asyncio.ensure_future(reader.read_all())
    await writer.write(b"a")
    writer.stream.write(b"boom")
    writer.stream.end(b"z")
    # The reader hears the stream broke (dropped: an abort), instead of waiting for an end that never comes.
    with pytest.raises(ChannelAbortedError) as caught:
        await asyncio.wait_for(reading, 10)
    assert caught.value.partial == b"a"
    with pytest.raises(ChannelConnectionError, match=r"a queued write failed \(RuntimeError"):
        await writer.close_async()


# ---- writes after the end are refused on a running loop, as where none runs


@pytest.mark.parametrize("data", [b"MORE", "MORE"], ids=["bytes", "str"])
@pytest.mark.parametrize("ended", ["stream.end", "close_async"])
async def test_stream_write_after_the_end_raises_on_a_running_loop(any_relay: tuple[str, ChannelRelay],
                                                                   ended: str, data: bytes | str) -> None:
    writer, reader = _ends(any_relay)
    reading = asyncio.ensure_future(_messages(reader))
    writer.stream.write(b"a")
    if ended == "stream.end":
        writer.stream.end(b"z")
    else:
        await writer.close_async()
    with pytest.raises(ChannelClosedError, match="writer is closed"):
        writer.stream.write(data)
    with pytest.raises(ChannelClosedError, match="writer is closed"):
        writer.stream.end(data)
    assert await reading == ([b"a", b"z"] if ended == "stream.end" else [b"a"])
    await writer.close_async()  # the close went through all the same


# ---- the queue counts a str's bytes


async def test_pending_bytes_and_the_high_water_mark_count_a_strs_utf8_bytes(relay: tuple[str, ChannelRelay]) -> None:
    writer, _reader = _ends(relay)
    writer.stream.high_water_mark = 4000
    assert writer.stream.write("😀" * 999) is True  # 3,996 bytes: under the mark
    assert writer.pending_bytes == 3996
    assert writer.stream.write("é" * 2) is False  # 4,000 bytes
    assert writer.pending_bytes == 4000
    await writer.abort()


# ---- a cancelled read_all leaves what it had read to the next read


@pytest.mark.parametrize("what", ["ChannelReader", "ChannelSource"])
async def test_a_cancelled_read_all_leaves_what_it_read_to_the_retry(relay: tuple[str, ChannelRelay],
                                                                     what: str) -> None:
    writer, reader = _ends(relay)
    mark = asyncio.Event()
    source = ChannelSource(reader, verify=False, on_text=lambda _text: mark.set())
    reader.on_message(lambda _text: mark.set())
    read_all = source.read_all if what == "ChannelSource" else reader.read_all
    reading = asyncio.ensure_future(read_all())
    await writer.write(b"first-half ")
    await writer.send_message_async("read that")  # its callback runs once the bytes before it were read
    await asyncio.wait_for(mark.wait(), 10)
    reading.cancel()  # as a wait_for timing out does
    with pytest.raises(asyncio.CancelledError):
        await reading
    await writer.write(b"second-half")
    await writer.close_async()
    assert await asyncio.wait_for(read_all(), 10) == b"first-half second-half"


# ---- ChannelSource.read_all(limit) counts what an earlier read left buffered


async def test_source_read_all_limit_counts_bytes_left_buffered(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = _ends(relay)
    await writer.write(b"A" * 60_000)  # one frame
    await writer.close_async()
    source = ChannelSource(reader, verify=False)
    assert await source.read(1) == b"A"  # the other 59,999 bytes stay buffered
    with pytest.raises(LimitExceededError, match="exceeds the limit of 100 bytes") as caught:
        await source.read_all(limit=100)
    assert caught.value.partial == b""  # none taken by it: left for byte reads
    assert await source.read() == b"A" * 59_999
