"""Attack on the channel adapters (iii_channels): silent loss, hangs and unbounded growth.

Each test names the fault it caught; all of them failed (or hung) before the fix that came with them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import iii_channels
from iii.channels import ChannelReader, ChannelWriter
from iii_channels import ChannelSink, ChannelSource, IntegrityError, ReaderGoneError
from iii_channels.files import file_header
from iii_channels.integrity import TRAILER_KEY
from iii_engine.channels import ChannelRelay
from tests.unit.channels.relay_server import relay_server

FLOOD = 200  # MiB a writer offers: far beyond every buffer, so only "reader gone" can end it


@pytest.fixture
async def relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(attach_timeout_s=5.0)) as served:
        yield served


@pytest.fixture
async def prod_relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(production_mode=True, attach_timeout_s=5.0)) as served:
        yield served


def ends(base: str, relay: ChannelRelay, buffer_size: int | None = None) -> tuple[ChannelWriter, ChannelReader]:
    refs = relay.create(buffer_size, owner="w")
    return ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])


async def flood(writer: ChannelWriter) -> None:
    """Offer FLOOD MiB; ends only by finishing (impossible: nobody reads it all) or by an error."""
    async with ChannelSink(writer, high_water_mark=1 << 20) as sink:
        for _ in range(FLOOD):
            await sink.write(bytes(1 << 20))


async def writer_hears(writer_task: asyncio.Future[None], *readers: ChannelReader,
                       within: float = 10.0) -> BaseException:
    """The writer's error once it learns the reader is gone; fails the test if it is still blocked (closing
    ``readers`` first, so the relay can shut down)."""
    done, _ = await asyncio.wait({writer_task}, timeout=within)
    if not done:
        writer_task.cancel()
        for reader in readers:
            await reader.close_async()
        pytest.fail(f"the writer was still blocked {within} s after the reading side failed")
    error = writer_task.exception()
    assert error is not None
    return error


# ---------------------------------------------------------------------------------------- hangs: reader never released


async def test_to_fd_disk_full_releases_the_writer(relay: tuple[str, ChannelRelay]) -> None:
    """/dev/full fails every write with ENOSPC: to_fd raises it, and the writer hears "reader gone" at once
    (before: the reader stayed open and the writer waited on backpressure forever)."""
    writer, reader = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(writer))
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="No space left"):
            await iii_channels.to_fd(reader, fd)
    finally:
        os.close(fd)
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)


async def test_to_fd_into_a_closed_pipe_releases_the_writer(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(writer))
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # like `iii-channel serve --out - | head -c 10`
    try:
        with pytest.raises(BrokenPipeError):
            await iii_channels.to_fd(reader, write_fd)
    finally:
        os.close(write_fd)
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)


async def test_to_stream_peer_gone_releases_the_writer(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(writer))

    async def rude_peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(1)
        w.transport.abort()  # connection reset

    server = await asyncio.start_server(rude_peer, "127.0.0.1", 0)
    async with server:
        _, out = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        with pytest.raises(ConnectionError):
            await iii_channels.to_stream(reader, out)
        out.close()
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)


async def test_copy_downstream_gone_releases_the_upstream_writer(relay: tuple[str, ChannelRelay]) -> None:
    """copy(r1, w2): when w2's reader leaves, copy fails, and w1's writer must hear it too."""
    w1, r1 = ends(*relay, buffer_size=2)
    w2, r2 = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(w1))
    copying = asyncio.ensure_future(iii_channels.copy(r1, w2))
    assert len(await ChannelSource(r2, verify=False).readexactly(10)) == 10
    await r2.close_async()
    with pytest.raises(ReaderGoneError):
        await asyncio.wait_for(copying, 10)
    assert isinstance(await writer_hears(producing, r1), ReaderGoneError)


async def test_cancelled_to_process_kills_it_and_releases_the_writer(relay: tuple[str, ChannelRelay]) -> None:
    """A subprocess that never reads its stdin: cancelling to_process must kill it and release the writer."""
    writer, reader = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(writer))
    feeding = asyncio.ensure_future(
        iii_channels.to_process(reader, [sys.executable, "-c", "import time; time.sleep(60)"]))
    await asyncio.wait({producing, feeding}, timeout=0.5)  # both blocked: the process reads nothing
    assert not feeding.done()
    feeding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(feeding, 10)
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)


async def test_cancelled_sink_close_aborts_the_stream(relay: tuple[str, ChannelRelay]) -> None:
    """A sink cancelled while close() flushes must abort the stream: the reader got an unfinished stream that
    nobody will ever end (before: the writer stayed open and the reader waited for ever)."""
    writer, reader = ends(*relay, buffer_size=2)

    async def produce() -> None:
        async with ChannelSink(writer, high_water_mark=64 << 20) as sink:
            await sink.write(bytes(48 << 20))  # queued; close() then waits for the reader to take it

    producing = asyncio.ensure_future(produce())
    source = ChannelSource(reader)
    assert len(await source.readexactly(1000)) == 1000
    await asyncio.wait({producing}, timeout=0.2)
    assert not producing.done(), "the 48 MiB were taken by buffers: the sink never waited in close()"
    reading = asyncio.ensure_future(source.read_all())
    producing.cancel()
    try:
        with pytest.raises(iii_channels.ChannelAbortedError):
            await asyncio.wait_for(reading, 10)
    finally:
        await reader.close_async()  # lets the relay shut down when the writer was left open
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(producing, 10)


# --------------------------------------------------------------------------------------------------- silent loss


async def test_receive_file_refuses_a_file_shorter_than_its_header_said(prod_relay: tuple[str, ChannelRelay],
                                                                        tmp_path: Path) -> None:
    """The production engine turns a writer crash into EOF. Without require_trailer, receive_file stored the
    truncated file as complete although send_file's header announced the size."""
    writer, reader = ends(*prod_relay)
    target = tmp_path / "copy.bin"
    receiving = asyncio.ensure_future(iii_channels.receive_file(reader, target))
    await writer.send_message_async(file_header("big.bin", 300_000))
    await writer.write(b"z" * 100_000)
    assert writer._end is not None
    writer._end.abort()  # the sender process dies
    with pytest.raises(IntegrityError, match=r"ended after \d+ of the 300000 bytes the sender announced"):
        await asyncio.wait_for(receiving, 10)
    assert os.listdir(tmp_path) == []


async def test_the_header_size_is_held_under_a_verified_trailer_too(relay: tuple[str, ChannelRelay],
                                                                   tmp_path: Path) -> None:
    """The trailer vouches only for the bytes as sent: a header saying 10 and 25 bytes was stored as verified (this
    test said so; a file that changes size while sent now fails at the sender, ``FileChangedError``, and
    ``send_file`` declares no size where the size is not the length)."""
    writer, reader = ends(*relay)

    async def send() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(file_header("grew.bin", 10))
            await sink.write(b"y" * 25)

    _, received = await asyncio.gather(send(), iii_channels.receive_file(reader, tmp_path / "out.bin"),
                                       return_exceptions=True)
    assert isinstance(received, IntegrityError), repr(received)
    assert "more than the 10 bytes the sender's header declared" in str(received)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("trailer", [
    '{"' + TRAILER_KEY + '": 1, "bytes": 5',                      # cut short
    '{"' + TRAILER_KEY + '": 1, "bytes": "five", "sha256": "x"}',  # not a count
    '{"' + TRAILER_KEY + '": 1, "sha256": "x"}',                   # no count
])
async def test_a_malformed_trailer_is_an_integrity_error(relay: tuple[str, ChannelRelay], trailer: str) -> None:
    """A text message that starts as a trailer but does not parse was ignored, so the stream read as complete and
    unchecked (verified False, no error) unless require_trailer was set."""
    writer, reader = ends(*relay)
    await writer.write(b"hello")
    await writer.send_message_async(trailer)
    await writer.close_async()
    with pytest.raises(IntegrityError, match="malformed integrity trailer"):
        await ChannelSource(reader).read_all()


async def test_a_second_trailer_is_an_integrity_error(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    async with ChannelSink(writer) as sink:
        await sink.write(b"hello")
        await sink.drain()  # send_text refuses trailer-like text: sent past the sink, in order, then the good one
        await writer.send_message_async('{"' + TRAILER_KEY + '": 1, "bytes": 9, "sha256": "x"')
    with pytest.raises(IntegrityError, match="malformed integrity trailer"):
        await ChannelSource(reader).read_all()


# ------------------------------------------------------------------------------------------------------ unbounded


async def test_send_text_waits_at_the_high_water_mark(relay: tuple[str, ChannelRelay]) -> None:
    """send_text never waited: a producer of text records ran ahead of a stalled reader without bound."""
    writer, _reader = ends(*relay, buffer_size=2)
    sink = ChannelSink(writer, high_water_mark=64 * 1024)
    record = "r" * 1000

    async def produce() -> None:
        # 100 MB: far more than every buffer on the way can hold (loopback's kernel buffers grow to ~10 MB, which
        # 10 MB of records, as this test sent before, sometimes fit in whole: it failed 2 runs in 6)
        for _ in range(100_000):
            await sink.send_text(record)
            assert sink.queued_bytes <= 64 * 1024 + len(record)

    producing = asyncio.ensure_future(produce())
    done, _ = await asyncio.wait({producing}, timeout=1.0)
    assert not done, "100 MB of text queued for a reader that reads nothing"
    assert sink.queued_bytes <= 64 * 1024 + len(record)
    producing.cancel()
    await sink.abort()


async def test_unread_text_messages_are_bounded(relay: tuple[str, ChannelRelay]) -> None:
    """Text messages a consumer of bytes never asks for were kept without bound (receive_file, to_fd, …)."""
    writer, reader = ends(*relay)

    async def spam() -> None:
        async with ChannelSink(writer) as sink:
            for _ in range(200):
                await sink.send_text("t" * 100_000)  # 20 MB of text nobody reads
            await sink.write(b"data")

    source = ChannelSource(reader, text_limit=1 << 20)
    spamming = asyncio.ensure_future(spam())
    try:
        with pytest.raises(iii_channels.LimitExceededError) as raised:
            await asyncio.wait_for(source.read_all(), 10)
    finally:
        await reader.close_async()
    await asyncio.wait_for(asyncio.gather(spamming, return_exceptions=True), 10)  # ended, either way
    results = [None, raised.value]
    assert "text held unread" in str(results[1])
    assert sum(map(len, source._texts)) <= 1 << 20


async def test_receive_file_keeps_no_text_messages(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    """receive_file never hands text on, so it holds none: a sender's 20 MB of text are not kept (before: all of
    it stayed in memory until the end); the file still arrives verified."""
    writer, reader = ends(*relay)
    held: list[int] = []
    original = ChannelSource._on_text_message

    async def spy(self: ChannelSource, text: str) -> None:
        await original(self, text)
        held.append(sum(map(len, self._texts)))

    async def spam() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(file_header("x.bin", 4))
            for _ in range(200):
                await sink.send_text("t" * 100_000)
            await sink.write(b"data")

    mp = pytest.MonkeyPatch()
    mp.setattr(ChannelSource, "_on_text_message", spy)
    try:
        _, receipt = await asyncio.gather(spam(), iii_channels.receive_file(reader, tmp_path / "x.bin"))
    finally:
        mp.undo()
    assert receipt.verified and (tmp_path / "x.bin").read_bytes() == b"data"
    assert max(held) == 0


# --------------------------------------------------------------------------------------------------------- trees


async def test_receive_dir_refuses_an_unknown_entry_type(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    """An entry of type "symlink" (or anything else) was stored as a regular file."""
    from iii_channels.trees import ENTRY_KEY

    writer, reader = ends(*relay)

    async def evil() -> None:
        async with ChannelSink(writer) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "link", "type": "symlink", "target": "/etc"}}))

    results = await asyncio.gather(evil(), iii_channels.receive_dir(reader, tmp_path / "d"), return_exceptions=True)
    assert isinstance(results[1], IntegrityError) and "'symlink'" in str(results[1])
    assert os.listdir(tmp_path) == []


async def test_receive_dir_bounds_the_entry_count(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    from iii_channels.trees import ENTRY_KEY

    writer, reader = ends(*relay)

    async def many() -> None:
        async with ChannelSink(writer) as sink:
            for i in range(1000):
                await sink.send_text(json.dumps({ENTRY_KEY: {"path": f"d{i}", "type": "dir"}}))

    results = await asyncio.gather(many(), iii_channels.receive_dir(reader, tmp_path / "d", max_entries=100),
                                   return_exceptions=True)
    assert isinstance(results[1], iii_channels.LimitExceededError) and "100 entries" in str(results[1])
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------- the command and the disk


@pytest.mark.parametrize("out", ["dir", "-"])
async def test_serve_refuses_a_stream_without_its_trailer(prod_relay: tuple[str, ChannelRelay], tmp_path: Path,
                                                          out: str, capfd: pytest.CaptureFixture[str]) -> None:
    """`iii-channel send` always ends with a trailer; `serve` stored a stdin upload whose sender died (EOF on the
    production engine, no header size to compare) as a complete file, or wrote it to stdout as a success."""
    from iii_channels.cli import _store

    writer, reader = ends(*prod_relay)
    storing = asyncio.ensure_future(
        _store(reader, {"name": "stdin", "size": None}, str(tmp_path) if out == "dir" else "-", None))
    await writer.write(b"half of it")
    await writer.close_async()  # what the production engine makes of a sender that died
    with pytest.raises(IntegrityError, match="without an integrity trailer"):
        await asyncio.wait_for(storing, 10)
    assert os.listdir(tmp_path) == []


async def test_receive_file_on_a_full_disk_leaves_nothing_and_releases_the_writer(
        relay: tuple[str, ChannelRelay], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard (held before): a disk that fills up mid-file raises ENOSPC, removes the part file and tells the
    writer at once."""
    import errno

    from iii_channels import files

    class Full:
        def __init__(self, raw: object) -> None:
            self.raw = raw

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.raw.close()  # type: ignore[attr-defined]

        def writelines(self, _: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> object:
            return getattr(self.raw, name)

    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    writer, reader = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(writer))
    with pytest.raises(OSError, match="No space left"):
        await iii_channels.receive_file(reader, tmp_path / "big.bin")
    assert os.listdir(tmp_path) == []
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)


# ------------------------------------------------------------------------------------------------------ records


async def test_a_line_past_the_limit_in_one_chunk_is_refused(relay: tuple[str, ChannelRelay]) -> None:
    """readline(limit) returned a line of any length when its separator came in the same chunk."""
    writer, reader = ends(*relay)
    await writer.write(b"x" * 50_000 + b"\nshort\n")
    await writer.close_async()
    source = ChannelSource(reader)
    with pytest.raises(iii_channels.LimitExceededError, match="line exceeds the limit of 1000 bytes"):
        await source.readline(limit=1000)


async def test_a_bad_json_record_names_its_line(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    await writer.write(b'{"a": 1}\n\n{"b": 2}\n{oops\n')
    await writer.close_async()
    seen = []
    with pytest.raises(ValueError, match=r"line 4 is not JSON .*\{oops"):
        async for record in ChannelSource(reader).json_records():
            seen.append(record)
    assert seen == [{"a": 1}, {"b": 2}]


async def test_serve_to_stdout_never_interleaves_two_senders(relay: tuple[str, ChannelRelay],
                                                             capfd: pytest.CaptureFixture[bytes]) -> None:
    """`serve --out -` without --once runs a transfer per call: two at once wrote their chunks to stdout in turn."""
    from iii_channels.cli import _store

    async def send(writer: ChannelWriter, byte: bytes) -> None:
        async with ChannelSink(writer, high_water_mark=64 * 1024) as sink:
            for _ in range(32):
                await sink.write(byte * 65_536)

    (w1, r1), (w2, r2) = ends(*relay, buffer_size=2), ends(*relay, buffer_size=2)
    await asyncio.wait_for(asyncio.gather(
        send(w1, b"a"), send(w2, b"b"),
        _store(r1, {"name": "a", "size": None}, "-", None), _store(r2, {"name": "b", "size": None}, "-", None)), 20)
    out = capfd.readouterr().out
    assert out.count("a") == out.count("b") == 32 << 16 and len(out) == 64 << 16
    assert out in ("a" * (32 << 16) + "b" * (32 << 16), "b" * (32 << 16) + "a" * (32 << 16)), "interleaved"


# ------------------------------------------------------------------------------------------ guards (held before)


async def test_cancelled_from_process_kills_it_and_aborts_the_stream(relay: tuple[str, ChannelRelay]) -> None:
    """Guard: a process that writes a little and then hangs; cancelling from_process kills it and aborts."""
    writer, reader = ends(*relay)
    script = "import sys, time; sys.stdout.write('x' * 1000); sys.stdout.flush(); time.sleep(60)"
    producing = asyncio.ensure_future(iii_channels.from_process(writer, [sys.executable, "-c", script]))
    source = ChannelSource(reader)
    assert len(await asyncio.wait_for(source.readexactly(1000), 10)) == 1000
    producing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(producing, 10)
    with pytest.raises(iii_channels.ChannelAbortedError):
        await asyncio.wait_for(source.read_all(), 10)


async def test_cancelled_receive_dir_leaves_nothing_and_releases_the_writer(relay: tuple[str, ChannelRelay],
                                                                            tmp_path: Path) -> None:
    """Guard: receive_dir cancelled mid-file removes its staging directory and the writer hears it."""
    from iii_channels.trees import ENTRY_KEY

    writer, reader = ends(*relay, buffer_size=2)

    async def endless_file() -> None:
        # Endless, not FLOOD MiB: receive_dir reads this one while it runs, and a fast machine took all of 200 MiB
        # within the half second before the cancel (the writer then ended without an error to hear).
        async with ChannelSink(writer, high_water_mark=1 << 20) as sink:
            await sink.send_text(json.dumps({ENTRY_KEY: {"path": "big", "type": "file", "size": 1 << 50}}))
            while True:
                await sink.write(bytes(1 << 20))

    producing = asyncio.ensure_future(endless_file())
    receiving = asyncio.ensure_future(iii_channels.receive_dir(reader, tmp_path / "d"))
    await asyncio.wait({receiving}, timeout=0.5)
    assert not receiving.done()
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(receiving, 10)
    assert os.listdir(tmp_path) == []
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)


async def test_receive_dir_refusing_max_entries_releases_the_writer(relay: tuple[str, ChannelRelay],
                                                                    tmp_path: Path) -> None:
    """``max_entries=0`` is refused, and the writer hears "reader gone" at once (before: the ValueError came
    before the reader was released, and the writer waited on backpressure for the channel's deadline)."""
    writer, reader = ends(*relay, buffer_size=2)
    producing = asyncio.ensure_future(flood(writer))
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        await iii_channels.receive_dir(reader, tmp_path / "out", max_entries=0)
    assert isinstance(await writer_hears(producing, reader), ReaderGoneError)
