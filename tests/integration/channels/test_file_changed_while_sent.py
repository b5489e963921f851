"""A file that changes while it is sent fails the send (attack report on channels, 3).

``send_file`` read the file as it came and closed the stream under a trailer that verified what was read: a file
truncated from 32 MiB to 5 MiB mid-send was stored, 5 MiB, ``verified`` true, and ``iii-channel send`` exited 0.
Now the sender checks the file once read to its end and aborts the stream when it changed.

The change is made from the sender's progress callback, at its first report: the sink reads at most its
high-water mark (4 MiB) ahead of what went out, so the file (16 MiB) is then still being read, with no timing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import iii_channels
from iii.iii import III
from iii_channels import ChannelAbortedError, FileChangedError, IntegrityError, ReaderGoneError

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024
SIZE = 16 * MIB
CHUNK = 256 * 1024


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(SIZE))
    # An hour ago: a rewrite within the file system's timestamp tick of its creation still moves its mtime.
    past = src.stat().st_mtime_ns - 3600 * 10**9
    os.utime(src, ns=(past, past))
    return src


def _truncate(src: Path) -> None:
    os.truncate(src, 5 * MIB)


def _append(src: Path) -> None:
    with src.open("ab") as fh:
        fh.write(b"A" * MIB)


def _rewrite(src: Path) -> None:  # same size, other bytes near its end
    with src.open("r+b") as fh:
        fh.seek(SIZE - 2 * MIB)
        fh.write(bytes(MIB))


def _once(change: Callable[[Path], None], src: Path) -> Callable[[int, int | None], None]:
    done: list[bool] = []

    def progress(sent: int, total: int | None) -> None:
        if not done:
            done.append(True)
            change(src)

    return progress


@pytest.mark.parametrize("change", [_truncate, _append, _rewrite], ids=["truncate", "append", "rewrite"])
async def test_send_file_of_a_file_changed_meanwhile_fails_and_nothing_is_stored(
        worker: III, tmp_path: Path, change: Callable[[Path], None]) -> None:
    """Before: truncate stored 5,242,880 of the 16,777,216 bytes announced, verified True, send_file returned."""
    src = _source(tmp_path)
    (tmp_path / "in").mkdir()
    channel = await worker.create_channel_async()
    sending = iii_channels.send_file(channel.writer, src, chunk_size=CHUNK, progress=_once(change, src))
    receiving = iii_channels.receive_file(channel.reader, tmp_path / "in", require_trailer=True)
    sent, received = await asyncio.gather(sending, receiving, return_exceptions=True)
    if isinstance(received, IntegrityError):
        # grown: the receiver may refuse the bytes past the header's size before the sender's abort reaches it, and
        # leave; the sender then hears that the reader went, or (having read the file to its end first) that the
        # file changed: it fails either way, and nothing is stored
        assert "more than the 16777216 bytes the sender's header declared" in str(received), received
        assert isinstance(sent, FileChangedError | ReaderGoneError), sent
        assert os.listdir(tmp_path / "in") == []
        return
    assert isinstance(sent, FileChangedError), sent
    assert str(src) in str(sent) and "the stream was aborted" in str(sent)
    assert isinstance(received, ChannelAbortedError), received  # the sender's abort reached the reader first
    if change is _truncate:  # the reason reaches the reader whole, however long the path (it was cut at 123 bytes)
        assert f"changed size from {SIZE} to {5 * MIB} bytes while it was sent" in str(received), received
    assert os.listdir(tmp_path / "in") == []


async def test_send_files_of_a_file_changed_meanwhile_fails_and_nothing_is_stored(
        worker: III, tmp_path: Path) -> None:
    src = _source(tmp_path)
    channel = await worker.create_channel_async()
    sending = iii_channels.send_files(channel.writer, [src], chunk_size=CHUNK, progress=_once(_truncate, src))
    receiving = iii_channels.receive_dir(channel.reader, tmp_path / "out")
    sent, received = await asyncio.gather(sending, receiving, return_exceptions=True)
    assert isinstance(sent, FileChangedError), sent
    assert isinstance(received, ChannelAbortedError), received
    assert f"changed size from {SIZE} to {5 * MIB} bytes while it was sent" in str(received), received
    assert not (tmp_path / "out").exists()


async def test_a_file_left_alone_still_sends(worker: III, tmp_path: Path) -> None:
    src = _source(tmp_path)
    channel = await worker.create_channel_async()
    sent, receipt = await asyncio.gather(iii_channels.send_file(channel.writer, src, chunk_size=CHUNK),
                                         iii_channels.receive_file(channel.reader, tmp_path / "copy.bin",
                                                                   require_trailer=True))
    assert (sent, receipt.size, receipt.verified) == (SIZE, SIZE, True)
    assert (tmp_path / "copy.bin").read_bytes() == src.read_bytes()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc here")
async def test_a_pseudo_file_still_sends(worker: III, tmp_path: Path) -> None:
    """The check holds the file to its own stat, not its length to its size: /proc files say 0 bytes."""
    proc = Path("/proc/self/status")
    channel = await worker.create_channel_async()
    sent, receipt = await asyncio.gather(iii_channels.send_file(channel.writer, proc),
                                         iii_channels.receive_file(channel.reader, tmp_path / "status",
                                                                   require_trailer=True))
    assert sent > 0 and receipt.size == sent and receipt.verified


async def test_a_file_that_keeps_growing_fails_at_its_declared_size(worker: III, tmp_path: Path) -> None:
    """Before: a file appended to as it was read was sent as long as it grew (a 50 MiB file growing 1 MiB per
    0.02 s: progress at 477 MiB of 58 MiB after 20 s), and failed only once its growth stopped. Here it grows 1 MiB
    at each progress report (48 MiB at most, so the old code ends): the send fails as a read passes its size, and
    no byte past it reaches the reader nor the progress."""
    src = _source(tmp_path)
    grown: list[int] = []
    reports: list[tuple[int, int | None]] = []

    def progress(sent: int, total: int | None) -> None:
        reports.append((sent, total))
        if len(grown) < 48:
            _append(src)
            grown.append(MIB)

    channel = await worker.create_channel_async()
    source = iii_channels.ChannelSource(channel.reader)

    async def read_all() -> int:
        got = 0
        while chunk := await source.read(CHUNK):
            got += len(chunk)
        return got

    sent, received = await asyncio.gather(
        iii_channels.send_file(channel.writer, src, chunk_size=CHUNK, progress=progress, header=False),
        read_all(), return_exceptions=True)
    assert source.bytes_read <= SIZE, source.bytes_read  # before: 67,108,864 (16 MiB + the 48 MiB appended)
    assert reports and max(done for done, _ in reports) <= SIZE and {total for _, total in reports} == {SIZE}
    assert isinstance(sent, FileChangedError), sent
    assert f"grew past its size of {SIZE} bytes" in str(sent) and str(src) in str(sent), sent
    assert isinstance(received, ChannelAbortedError), received
