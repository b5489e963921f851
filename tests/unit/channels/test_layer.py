"""The iii_channels layer: sink/source, integrity trailer, files, pipes, copy, progress."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii_channels import (
    ChannelAbortedError,
    ChannelSink,
    ChannelSource,
    IncompleteReadError,
    IntegrityError,
    LimitExceededError,
    ProcessError,
    ProgressBar,
)
from iii_engine.channels import ChannelRelay

COPY_STDIN = "import sys, shutil; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer)"


def ends(base: str, relay: ChannelRelay, buffer_size: int | None = None) -> tuple[ChannelWriter, ChannelReader]:
    refs = relay.create(buffer_size, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


async def test_sink_source_roundtrip_with_trailer(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    data = os.urandom(3_000_000)
    seen: list[int] = []

    async def send() -> None:
        async with ChannelSink(writer, high_water_mark=256 * 1024, progress=lambda d, t: seen.append(d)) as sink:
            await sink.send_text("meta")
            for i in range(0, len(data), 100_000):
                await sink.write(data[i : i + 100_000])
                assert sink.queued_bytes <= 256 * 1024 + 100_000

    source = ChannelSource(reader, require_trailer=True)
    _, got = await asyncio.gather(send(), source.read_all())
    assert got == data
    assert source.verified
    assert await source.next_message() == "meta"
    assert seen[-1] == len(data)


async def test_truncation_detected_without_abort_signal(prod_relay: tuple[str, ChannelRelay]) -> None:
    # Production turns a writer abort into EOF; require_trailer turns that into an IntegrityError.
    writer, reader = ends(*prod_relay)
    sink = ChannelSink(writer)
    await sink.write(b"a" * 1000)
    await sink.drain()
    await sink.abort("crash")
    with pytest.raises(IntegrityError, match="without an integrity trailer"):
        await ChannelSource(reader, require_trailer=True).read_all()


async def test_trailer_mismatch_is_integrity_error(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    await writer.write(b"abc")
    await writer.send_message_async(json.dumps({"iii_channels_trailer": 1, "bytes": 4, "sha256": "00"}))
    await writer.close_async()
    with pytest.raises(IntegrityError, match="received 3 bytes, the writer sent 4"):
        await ChannelSource(reader).read_all()


async def test_sink_context_aborts_on_exception(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    with pytest.raises(ValueError):
        async with iii_channels.sink(writer) as sink:
            await sink.write(b"x")
            raise ValueError("bad input")
    with pytest.raises(ChannelAbortedError, match="bad input"):
        await ChannelSource(reader).read_all()


async def test_stream_reads(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    payload = b'HEAD\nline one\n{"a": 1}\n\n{"b": [2]}\nXYZ'

    async def send() -> None:
        for i in range(0, len(payload), 3):  # small chunks: reads must span message boundaries
            await writer.write(payload[i : i + 3])
        await writer.close_async()

    async def receive() -> tuple[bytes, bytes, bytes, list[object], bytes]:
        source = iii_channels.source(reader)
        first = await source.readexactly(2)
        rest_of_head = await source.readuntil(b"\n")
        line = await source.readline()
        records = []
        async for record in source.json_records():
            records.append(record)
            if len(records) == 2:
                break
        tail = await source.read()
        return first, rest_of_head, line, records, tail

    _, (first, head, line, records, tail) = await asyncio.gather(send(), receive())
    assert (first, head, line) == (b"HE", b"AD\n", b"line one\n")
    assert records == [{"a": 1}, {"b": [2]}]
    assert tail == b"XYZ"


async def test_readexactly_eof_and_read_all_limit(any_relay: tuple[str, ChannelRelay]) -> None:
    base, r = any_relay
    writer, reader = ends(base, r)
    await writer.write(b"abc")
    await writer.close_async()
    with pytest.raises(IncompleteReadError) as info:
        await ChannelSource(reader).readexactly(10)
    assert info.value.partial == b"abc"
    writer, reader = ends(base, r)
    await writer.write(b"x" * 100)
    writer.close()
    with pytest.raises(LimitExceededError):
        await ChannelSource(reader).read_all(limit=50)


async def test_lines_and_messages_iterators(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    await writer.send_message_async("hello")
    await writer.write(b"a\nb\n")
    await writer.send_message_async("bye")
    await writer.close_async()
    source = ChannelSource(reader)
    assert [m async for m in source.messages()] == ["hello", "bye"]
    assert [line async for line in source.lines()] == [b"a\n", b"b\n"]


async def test_send_and_receive_file(any_relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(2_500_000))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    writer, reader = ends(*any_relay)
    sent, receipt = await asyncio.gather(
        iii_channels.send_file(writer, src), iii_channels.receive_file(reader, out_dir, require_trailer=True))
    assert sent == src.stat().st_size
    assert receipt.path == out_dir / "in.bin"
    assert receipt.verified
    assert receipt.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert list(out_dir.iterdir()) == [out_dir / "in.bin"]


@pytest.mark.parametrize("production", [False, True])
async def test_killed_writer_leaves_no_file(tmp_path: Path, production: bool) -> None:
    from .relay_server import relay_server

    async with relay_server(ChannelRelay(production_mode=production)) as (base, r):
        writer, reader = ends(base, r)
        target = tmp_path / "final.bin"
        receiving = asyncio.ensure_future(iii_channels.receive_file(reader, target, require_trailer=True))
        await writer.write(b"z" * 200_000)
        assert writer._end is not None
        writer._end.abort()  # the writer process "dies"
        with pytest.raises((ChannelAbortedError, IntegrityError)):
            await receiving
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240


async def test_reader_that_stops_early(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay, buffer_size=2)

    async def produce() -> None:
        async with ChannelSink(writer) as sink:
            for _ in range(1000):
                await sink.write(b"p" * 65_536)

    task = asyncio.ensure_future(produce())
    source = ChannelSource(reader)
    assert len(await source.readexactly(10)) == 10
    await reader.close_async()
    with pytest.raises(iii_channels.ReaderGoneError):
        await task


async def test_from_process_and_to_process(any_relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    base, r = any_relay
    writer, reader = ends(base, r)
    script = "import sys; sys.stdout.buffer.write(b'0123456789' * 100000)"
    out = tmp_path / "copy.bin"
    with open(out, "wb") as fh:  # noqa: ASYNC230 - tiny local file in a test
        sent, fed = await asyncio.gather(
            iii_channels.from_process(writer, [sys.executable, "-c", script]),
            iii_channels.to_process(reader, [sys.executable, "-c", COPY_STDIN], stdout=fh))
    assert sent == fed == 1_000_000
    assert out.read_bytes() == b"0123456789" * 100000


async def test_failing_process_aborts_with_stderr(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    script = "import sys; sys.stdout.write('partial'); sys.stderr.write('no space left'); sys.exit(3)"
    results = await asyncio.gather(
        iii_channels.from_process(writer, [sys.executable, "-c", script]),
        ChannelSource(reader).read_all(), return_exceptions=True)
    assert isinstance(results[0], ProcessError)
    assert results[0].returncode == 3 and b"no space left" in results[0].stderr
    assert isinstance(results[1], ChannelAbortedError)


async def test_to_process_nonzero_exit(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    await writer.write(b"data")
    writer.close()
    with pytest.raises(ProcessError, match="exit status 5"):
        await iii_channels.to_process(reader, [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(5)"])


async def test_iterable_fd_stream_and_copy(any_relay: tuple[str, ChannelRelay]) -> None:
    base, r = any_relay
    w1, r1 = ends(base, r)
    w2, r2 = ends(base, r)

    async def gen() -> AsyncIterator[bytes]:
        for i in range(20):
            yield bytes([i]) * 30_000

    read_fd, write_fd = os.pipe()

    def drain_pipe() -> bytes:
        out = bytearray()
        while chunk := os.read(read_fd, 1 << 16):
            out += chunk
        return bytes(out)

    async def to_pipe() -> int:
        try:
            return await iii_channels.to_fd(r2, write_fd, require_trailer=True)
        finally:
            os.close(write_fd)  # EOF for drain_pipe

    try:
        results = await asyncio.gather(
            iii_channels.from_iterable(w1, gen()), iii_channels.copy(r1, w2), to_pipe(),
            asyncio.to_thread(drain_pipe))
        assert list(results[:3]) == [600_000, 600_000, 600_000]
        assert results[3] == b"".join(bytes([i]) * 30_000 for i in range(20))
    finally:
        os.close(read_fd)


async def test_asyncio_stream_adapters(any_relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*any_relay)
    received = bytearray()
    done = asyncio.Event()

    async def sink_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        received.extend(await r.read())
        w.close()
        done.set()

    async def source_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"s" * 500_000)
        await w.drain()
        w.close()

    src = await asyncio.start_server(source_server, "127.0.0.1", 0)
    dst = await asyncio.start_server(sink_server, "127.0.0.1", 0)
    async with src, dst:
        in_r, in_w = await asyncio.open_connection(*src.sockets[0].getsockname()[:2])
        _, out_w = await asyncio.open_connection(*dst.sockets[0].getsockname()[:2])
        counts = await asyncio.gather(iii_channels.from_stream(writer, in_r), iii_channels.to_stream(reader, out_w))
        assert list(counts) == [500_000, 500_000]
        in_w.close()
        await done.wait()
    assert len(received) == 500_000
    assert bytes(received) == b"s" * 500_000


def test_progress_bar_draws_rate_and_eta() -> None:
    out = io.StringIO()
    bar = ProgressBar(label="x.bin", stream=out, interval=0)
    bar(512 * 1024, 1024 * 1024)
    bar.close()
    text = out.getvalue()
    assert "x.bin" in text and "50%" in text and "ETA" in text and "/s" in text


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_redraws_on_a_terminal_and_prints_lines_elsewhere(tty: bool) -> None:
    out = io.StringIO()
    bar = ProgressBar(label="f", stream=out, interval=0, tty=tty)
    bar(1, 4)
    bar(2, 4)
    bar.close()
    bar.close()  # idempotent: adapters and their callers may both close it
    text = out.getvalue()
    if tty:
        assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    else:
        assert "\r" not in text and text.count("\n") == 3
    assert " 50%" in text.rsplit("\r", 1)[-1].splitlines()[-1]  # the final draw shows the last state


async def _send_named(writer: ChannelWriter, name: str, data: bytes) -> None:
    """What ``send_file`` does, with any name the sender likes."""
    from iii_channels.files import file_header

    await writer.send_message_async(file_header(name, len(data)))
    await writer.write(data)
    await writer.close_async()


async def test_receive_file_into_a_directory_keeps_an_existing_file(relay: tuple[str, ChannelRelay],
                                                                     tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_bytes(b"mine")
    writer, reader = ends(*relay)
    sending = asyncio.ensure_future(_send_named(writer, "report.txt", b"theirs" * 1000))
    with pytest.raises(FileExistsError, match=r"report\.txt already exists; pass overwrite=True"):
        await iii_channels.receive_file(reader, tmp_path)
    await asyncio.gather(sending, return_exceptions=True)
    assert (tmp_path / "report.txt").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]  # noqa: ASYNC240 - no temp file left

    writer, reader = ends(*relay)
    _, receipt = await asyncio.gather(_send_named(writer, "report.txt", b"theirs"),
                                      iii_channels.receive_file(reader, tmp_path, overwrite=True))
    assert receipt.path == tmp_path / "report.txt"
    assert (tmp_path / "report.txt").read_bytes() == b"theirs"


@pytest.mark.parametrize("name", ["..", "", ".", "../escape.txt", "sub/file.txt", "a\\b", "/etc/passwd"])
async def test_receive_file_refuses_unsafe_sender_names(relay: tuple[str, ChannelRelay], tmp_path: Path,
                                                        name: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    writer, reader = ends(*relay)
    sending = asyncio.ensure_future(_send_named(writer, name, b"payload"))
    with pytest.raises(ValueError, match=r"refusing the sender's file name .*: it (is empty|contains a path)"):
        await iii_channels.receive_file(reader, inbox)
    await asyncio.gather(sending, return_exceptions=True)
    assert list(inbox.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inbox"]  # noqa: ASYNC240


def test_a_failed_feed_ends_close_and_write_instead_of_spinning() -> None:
    # The pump that feeds the socket died on an error with items still queued: close() (drain) used to loop on a
    # wait that returned at once, never yielding, forever at full CPU. Run it on a thread so a spin cannot hang
    # the suite.
    import threading

    outcome: list[BaseException | None] = []

    async def scenario() -> None:
        writer, _reader = ends("ws://127.0.0.1:1", ChannelRelay())  # never connects: its sends are replaced

        async def sent(message: str) -> None:
            return None

        async def broken(data: object) -> None:
            raise ConnectionResetError("socket gone")

        writer.send_message_async = sent  # type: ignore[method-assign]
        writer.write = broken  # type: ignore[method-assign]
        sink = ChannelSink(writer, high_water_mark=10)
        await sink.send_text("header")  # queued ahead: the pump sends it, then fails on the bytes
        with pytest.raises(ConnectionResetError, match="socket gone"):
            await sink.write(b"x" * 100)  # over the high-water mark: waits for the feed, which fails
        again = ChannelSink(writer)
        await again.write(b"y" * 10)
        with pytest.raises(ConnectionResetError, match="socket gone"):
            await again.close()

    def run() -> None:
        try:
            asyncio.run(scenario())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the sink spun on a dead feed"
    assert outcome == [None], outcome
