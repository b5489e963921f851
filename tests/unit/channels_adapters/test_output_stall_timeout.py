"""``stall_timeout`` of ``to_process`` and ``to_fd``: a command (or an fd's reader) that stops taking its input
without exiting or closing it held the copy, and the channel's writer, until it exited or the call was cancelled.
Only a reader that takes nothing is stalled: one taking a byte at a time is not (Linux says a full pipe has room only
once a page of it is free, so room alone cannot tell them apart)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, OutputStalledError, ProcessError, to_fd, to_process
from iii_channels.stall import StallWatch
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

CHUNK = 65536


async def _feed(writer: ChannelWriter, chunks: int) -> None:
    async with ChannelSink(writer) as out:
        for _ in range(chunks):
            await out.write(b"z" * CHUNK)


async def test_a_command_that_stops_reading_without_exiting_is_killed_at_its_stall_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with local_channel() as ch:
        feeding = asyncio.ensure_future(_feed(ch.writer, 128))
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(OutputStalledError) as caught:
            # before: no bound; the copy waited for the command's exit (an hour here)
            await to_process(ch.reader, ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 3600"], stall_timeout=0.5)
        assert 0.5 <= loop.time() - began < 10
        assert isinstance(caught.value, TimeoutError)
        message = str(caught.value)
        assert message.startswith("command 'sh -c echo $$ > ") and "exec sleep 3600' took none of the " in message
        assert message.endswith(" bytes waiting for it for 0.5 s (0 taken before)"), message
        assert caught.value.taken == 0 and caught.value.unread is not None and caught.value.unread >= CHUNK
        with pytest.raises(ProcessLookupError):  # killed with its group, not left running
            os.kill(int(pid_file.read_text()), 0)
        # the writer hears: released, not left in its backpressure wait
        await asyncio.wait_for(asyncio.gather(feeding, return_exceptions=True), 10)


SLOW_THEN_ALL = ("import os, sys, time\n"
                 "for _ in range(15):\n"
                 "    os.read(0, 1)\n"
                 "    time.sleep(0.1)\n"
                 "time.sleep(0.3)\n"  # works a while, less than the stall_timeout
                 "sys.stdout.write(str(15 + len(sys.stdin.buffer.read())))\n")


async def test_a_command_that_reads_a_byte_at_a_time_is_not_stalled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with local_channel() as ch:
        with out.open("w") as stdout:
            fed, _ = await asyncio.gather(
                to_process(ch.reader, [sys.executable, "-u", "-c", SLOW_THEN_ALL], stall_timeout=0.6,
                           stdout=stdout),
                _feed(ch.writer, 8))
    # 1.8 s of one byte per 0.1 s on a full pipe: a bound measured on the pipe's room killed it at once
    assert fed == 8 * CHUNK
    assert out.read_text() == str(8 * CHUNK)


async def test_to_fd_into_a_pipe_nobody_reads_fails_at_its_stall_timeout() -> None:
    read_end, write_end = os.pipe()
    try:
        async with local_channel() as ch:
            feeding = asyncio.ensure_future(_feed(ch.writer, 16))
            with pytest.raises(OutputStalledError) as caught:
                await to_fd(ch.reader, write_end, stall_timeout=0.3)
            assert str(caught.value).startswith(f"fd {write_end} took none of the ")
            assert caught.value.unread == os.fstat(write_end).st_size or caught.value.unread is not None
            await asyncio.wait_for(asyncio.gather(feeding, return_exceptions=True), 10)
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_to_fd_into_a_pipe_read_slowly_is_not_stalled() -> None:
    read_end, write_end = os.pipe()
    got = bytearray()

    async def slow_reader() -> None:
        loop = asyncio.get_running_loop()
        while len(got) < 4 * CHUNK:
            await asyncio.sleep(0.02)
            got.extend(await loop.run_in_executor(None, os.read, read_end, 1024))

    try:
        async with local_channel() as ch:
            fed, _, _ = await asyncio.gather(to_fd(ch.reader, write_end, stall_timeout=0.3), _feed(ch.writer, 4),
                                             slow_reader())
        assert fed == len(got) == 4 * CHUNK
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_to_fd_into_a_regular_file_with_a_stall_timeout(tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as f:
        async with local_channel() as ch:
            fed, _ = await asyncio.gather(to_fd(ch.reader, f.fileno(), stall_timeout=0.1), _feed(ch.writer, 4))
    assert fed == (tmp_path / "f").stat().st_size == 4 * CHUNK


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "1", True, 10**400])
async def test_a_bad_stall_timeout_is_refused_before_the_command_starts(bad: object, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    async with local_channel() as ch:
        feeding = asyncio.ensure_future(_feed(ch.writer, 1))
        with pytest.raises((ValueError, TypeError), match="stall_timeout must be"):
            await to_process(ch.reader, ["touch", str(marker)], stall_timeout=bad)  # type: ignore[arg-type]
        await asyncio.wait_for(asyncio.gather(feeding, return_exceptions=True), 10)  # released at once
    assert not marker.exists()


async def _feed_with_pauses(writer: ChannelWriter, chunks: int, pause: float) -> None:
    async with ChannelSink(writer) as out:
        for _ in range(chunks):
            await out.write(b"z" * 100)  # small: taken by the reader at once, often before the copy looks
            await asyncio.sleep(pause)


async def test_a_writer_quiet_for_longer_than_the_stall_timeout_is_no_stall_of_a_reader_that_keeps_up(
        tmp_path: Path) -> None:
    # before (attack): the writer's pauses were counted against the reader: 8 of 12 copies into `cat` failed,
    # "took none of the 0 bytes waiting for it", and cat was killed
    out = tmp_path / "out"
    async with local_channel() as ch:
        fed, _ = await asyncio.gather(
            to_process(ch.reader, ["sh", "-c", f"cat > {out}"], stall_timeout=0.1),
            _feed_with_pauses(ch.writer, 6, 0.25))
    assert fed == out.stat().st_size == 600
    read_end, write_end = os.pipe()
    try:
        async with local_channel() as ch:
            draining = asyncio.ensure_future(asyncio.to_thread(_read_all, read_end))
            fed, _ = await asyncio.gather(to_fd(ch.reader, write_end, stall_timeout=0.1),
                                          _feed_with_pauses(ch.writer, 6, 0.25))
        os.close(write_end)
        write_end = -1
        assert fed == await draining == 600
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _read_all(fd: int) -> int:
    count = 0
    while chunk := os.read(fd, CHUNK):
        count += len(chunk)
    return count


async def test_input_that_fits_in_the_pipe_and_is_never_read_is_a_stall_too(tmp_path: Path) -> None:
    # before (attack): the whole stream went into the pipe, so no write waited; the copy then waited for the exit
    pid_file = tmp_path / "pid"
    async with local_channel() as ch:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(OutputStalledError) as caught:
            await asyncio.gather(
                to_process(ch.reader, ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 3600"], stall_timeout=0.5),
                _feed(ch.writer, 1))
        assert 0.5 <= loop.time() - began < 10
        assert caught.value.unread == CHUNK and caught.value.taken == 0
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


async def test_a_command_that_exits_leaving_input_unread_is_told_so_not_stalled() -> None:
    async with local_channel() as ch:
        with pytest.raises(ProcessError, match="stopped reading its input"):
            await asyncio.gather(to_process(ch.reader, ["sh", "-c", "head -c 100 >/dev/null"], stall_timeout=30),
                                 _feed(ch.writer, 1))


@pytest.mark.parametrize("kind", ["socket", "terminal"])
async def test_a_socket_or_terminal_is_refused_up_front(kind: str) -> None:
    """Their queues do not show a slow reader's bytes one by one (a TCP peer's window, a Unix socket's whole
    buffers, a pseudo-terminal's none): the attack had slow but live peers failed as stalled."""
    if kind == "socket":
        left, right = socket.socketpair()
        fd, keep = left.fileno(), [left, right]
    else:
        master, slave = os.openpty()
        fd, keep = slave, [master, slave]
    try:
        async with local_channel() as ch:
            feeding = asyncio.ensure_future(_feed(ch.writer, 1))
            with pytest.raises(ValueError, match=f"stall_timeout needs a pipe or FIFO: fd {fd} is a {kind}"):
                await to_fd(ch.reader, fd, stall_timeout=1)
            await asyncio.wait_for(asyncio.gather(feeding, return_exceptions=True), 10)  # released at once
    finally:
        for end in keep:
            end.close() if isinstance(end, socket.socket) else os.close(end)


@pytest.mark.parametrize("seconds", [1e-320, 1e-9, 1e-3])
async def test_a_tiny_stall_timeout_is_no_stall_while_the_pipe_is_empty(seconds: float) -> None:
    # before (attack): "took none of the 0 bytes waiting for it" at once, 5 of 5 at each value, nothing written yet
    read_end, write_end = os.pipe()
    try:
        watch = StallWatch(write_end, seconds, "the pipe")
        for _ in range(200):
            assert await watch.until_writable()
    finally:
        os.close(read_end)
        os.close(write_end)
