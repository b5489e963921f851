"""Attack A-CH on the channel adapters (iii_channels) through a real engine: bad input that was silently sent,
a sink that spun for ever, readers left waiting for a sender that had already given up, and text messages that
``items()`` dropped. Every test here failed (or hung) before the fix that came with it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii.iii import III
from iii_channels import ChannelAbortedError, ChannelSink, ChannelSource, IntegrityError, ReaderGoneError

pytestmark = pytest.mark.timeout(30)

# Far below the attach deadline (300 s) at which a reader left alone would hear ChannelExpiredError.
HEARS_WITHIN_S = 10.0


async def _ends(worker: III) -> tuple[ChannelWriter, ChannelReader]:
    channel = await worker.create_channel_async()
    return channel.writer, channel.reader


# ------------------------------------------------------------------------------------------- sink: bad input


async def test_write_of_an_int_is_refused_not_sent_as_zero_bytes(worker: III) -> None:
    """Before: ``bytes(5)`` made ``write(5)`` send five zero bytes (and ``write([1, 2])`` a list's bytes)."""
    writer, reader = await _ends(worker)

    async def write() -> None:
        async with ChannelSink(writer) as sink:
            for bad in (5, [1, 2], "text"):
                with pytest.raises(TypeError, match=f"bytes-like data, not {type(bad).__name__}"):
                    await sink.write(bad)  # type: ignore[arg-type]
            await sink.write(bytearray(b"ok"))
            await sink.write(memoryview(b"!"))

    source = ChannelSource(reader, require_trailer=True)
    _, data = await asyncio.gather(write(), source.read_all())
    assert data == b"ok!"
    assert source.verified


async def test_send_text_of_bytes_is_refused(worker: III) -> None:
    """Before: ``send_text(b"...")`` queued the bytes as binary data the trailer did not count, and the reader
    failed the whole stream with an IntegrityError."""
    writer, reader = await _ends(worker)

    async def write() -> None:
        async with ChannelSink(writer) as sink:
            with pytest.raises(TypeError, match="takes a str, not bytes"):
                await sink.send_text(b"bin")  # type: ignore[arg-type]
            await sink.write(b"x")

    source = ChannelSource(reader, require_trailer=True)
    _, data = await asyncio.gather(write(), source.read_all())
    assert data == b"x" and source.verified


@pytest.mark.parametrize("mark, error", [(-1, ValueError), (float("nan"), TypeError), (None, TypeError),
                                         (True, TypeError)])
async def test_a_high_water_mark_that_cannot_be_met_is_refused(worker: III, mark: Any,
                                                               error: type[Exception]) -> None:
    """Before: with ``high_water_mark=-1`` the first ``write`` looped on an empty queue without ever yielding
    (the event loop hung at 100 % CPU; no timeout could fire); ``nan`` never waited at all (unbounded)."""
    writer, _ = await _ends(worker)
    with pytest.raises(error, match="high_water_mark"):
        ChannelSink(writer, high_water_mark=mark)


# ----------------------------------------------------------------------------------------- source: bad input


async def test_readexactly_of_a_negative_count_is_refused(worker: III) -> None:
    """Before: ``readexactly(-1)`` sliced the buffer with -1 and returned all but its last byte."""
    writer, reader = await _ends(worker)
    source = ChannelSource(reader, require_trailer=True)

    async def write() -> None:
        async with ChannelSink(writer) as sink:
            await sink.write(b"abcdef")

    writing = asyncio.ensure_future(write())
    assert await source.readexactly(2) == b"ab"
    with pytest.raises(ValueError, match="readexactly needs 0 or more bytes, got -1"):
        await source.readexactly(-1)
    assert await source.readexactly(0) == b""
    assert await source.read_all() == b"cdef"
    await writing
    assert source.verified


# ------------------------------------------------------------------------------- items(): no text left behind


async def test_items_yields_texts_an_earlier_byte_read_set_aside_in_order(worker: III) -> None:
    """Before: a text message read past by ``readline()`` was set aside for ``messages()``; ``items()`` never
    yielded it, so a caller reading a header line and then items lost it silently."""
    writer, reader = await _ends(worker)

    async def write() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text("before")
            await sink.write(b"head")
            await sink.drain()  # separate messages: the text lands between the chunks
            await sink.send_text("middle")
            await sink.write(b"er\nbody")
            await sink.send_text("after")

    source = ChannelSource(reader, require_trailer=True)
    writing = asyncio.ensure_future(write())
    assert await source.readline() == b"header\n"
    items = [item async for item in source.items()]
    await writing
    assert items == ["before", "middle", b"body", "after"]
    assert source.verified


# ------------------------------------------------------------ senders that fail before writing tell the reader


async def _reader_hears(reader: ChannelReader) -> BaseException:
    """The reading side's error once the sender gave up; the test fails if it is still waiting."""
    source = ChannelSource(reader, require_trailer=True)
    try:
        await asyncio.wait_for(source.read_all(), HEARS_WITHIN_S)
    except TimeoutError:
        pytest.fail(f"the reader was still waiting {HEARS_WITHIN_S} s after its sender failed")
    except (ChannelAbortedError, IntegrityError) as exc:  # ours: aborted; production engine: no trailer
        return exc
    pytest.fail("the reader saw a complete stream from a sender that failed")


SENDER_CASES = ["send_file missing", "send_file chunk_size=0", "send_dir missing",
                "send_dir chunk_size=0", "send_files missing", "send_files unsafe name", "send_files chunk_size=-1",
                "from_process argv string"]


def _senders(tmp: Path) -> dict[str, Callable[[ChannelWriter], Awaitable[Any]]]:
    (tmp / "file").write_bytes(b"x" * 5000)
    return {
        "send_file missing": lambda w: iii_channels.send_file(w, tmp / "missing"),
        "send_file chunk_size=0": lambda w: iii_channels.send_file(w, tmp / "file", chunk_size=0),
        "send_dir missing": lambda w: iii_channels.send_dir(w, tmp / "missing"),
        "send_dir chunk_size=0": lambda w: iii_channels.send_dir(w, tmp, chunk_size=0),
        "send_files missing": lambda w: iii_channels.send_files(w, [tmp / "missing"]),
        "send_files unsafe name": lambda w: iii_channels.send_files(w, [("../x", tmp / "file")]),
        "send_files chunk_size=-1": lambda w: iii_channels.send_files(w, [tmp / "file"], chunk_size=-1),
        "from_process argv string": lambda w: iii_channels.from_process(w, "echo hi"),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("case", SENDER_CASES)
async def test_a_sender_that_cannot_start_aborts_the_channel_at_once(worker: III, tmp_path: Path,
                                                                    case: str) -> None:
    """Before: these raised before touching the channel, so the reader waited for the attach deadline (300 s);
    ``chunk_size=0`` even sent every file as empty under a trailer that verified (a silent empty copy)."""
    writer, reader = await _ends(worker)
    hearing = asyncio.ensure_future(_reader_hears(reader))
    try:
        with pytest.raises((OSError, ValueError, TypeError)):
            await _senders(tmp_path)[case](writer)
    finally:
        await hearing


async def test_to_process_refusing_its_argv_releases_the_writer(worker: III) -> None:
    """Before: ``to_process(reader, "sort")`` raised TypeError and left the writer blocked on backpressure until
    the attach deadline."""
    writer, reader = await _ends(worker)

    async def flood() -> None:
        async with ChannelSink(writer, high_water_mark=1 << 20) as sink:
            for _ in range(200):
                await sink.write(bytes(1 << 20))

    producing = asyncio.ensure_future(flood())
    with pytest.raises(TypeError, match="not one string"):
        await iii_channels.to_process(reader, sys.executable)  # type: ignore[arg-type]
    done, _ = await asyncio.wait({producing}, timeout=HEARS_WITHIN_S)
    if not done:
        # Not awaited: the abort of a writer stuck on backpressure itself hangs (an SDK fault, reported).
        producing.cancel()
        pytest.fail(f"the writer was still blocked {HEARS_WITHIN_S} s after to_process refused its argv")
    assert isinstance(producing.exception(), ReaderGoneError)
