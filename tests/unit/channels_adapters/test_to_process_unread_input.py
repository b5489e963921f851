"""``to_process`` with a command that exits 0 leaving part of its input unread says it stopped reading, however
small the input: when the whole stream fit into the pipe's buffer before the command exited, no write failed, and
it reported success with the bytes never read (``head -c 10`` fed 100 or 60,000 bytes: "OK"). A command that reads
all of its input still succeeds, whatever the size."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelSink, ProcessError, pipes, to_process
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)

STOPPED = "stopped reading its input before the end of the stream"

# Waits, without reading, until its stdin has no writer left (to_process closes it once the whole stream is in
# the pipe), then reads 10 bytes and exits 0: the bytes it leaves are known, whatever the timing.
READS_10_AFTER_THE_END = [sys.executable, "-c",
                          "import os, select; e = select.epoll(); e.register(0, 0); e.poll(); os.read(0, 10)"]


async def _feed(writer: ChannelWriter, size: int) -> None:
    async with ChannelSink(writer) as out:
        if size:
            await out.write(b"x" * size)


async def _run(argv: list[str], size: int, **popen: Any) -> int:
    async with local_channel() as ch:
        feeding = asyncio.ensure_future(_feed(ch.writer, size))
        try:
            return await to_process(ch.reader, argv, **popen)
        finally:
            await asyncio.gather(feeding, return_exceptions=True)  # the writer hears if the reader left


@pytest.mark.parametrize("size", [100, 60_000])
async def test_input_left_in_the_pipe_is_named_with_its_size(size: int) -> None:
    with pytest.raises(ProcessError) as caught:
        await _run(READS_10_AFTER_THE_END, size)  # before: returned the size, as if all had been read
    message = str(caught.value)
    assert STOPPED in message, message
    assert f"{size - 10} of the {size} bytes fed were left unread" in message, message
    assert caught.value.returncode == 0


@pytest.mark.parametrize("size", [100, 60_000, 2_000_000])
@pytest.mark.parametrize("argv", [["sh", "-c", "head -c 10 >/dev/null"], ["true"]])
async def test_a_command_that_stops_early_fails_at_any_size(argv: list[str], size: int) -> None:
    with pytest.raises(ProcessError, match=STOPPED) as caught:
        await _run(argv, size)
    assert caught.value.returncode == 0


@pytest.mark.parametrize("size", [0, 100, 60_000, 2_000_000])
async def test_a_command_that_reads_everything_succeeds(size: int, tmp_path: Path) -> None:
    counted = tmp_path / "count"
    assert await _run(["sh", "-c", f"wc -c > {counted}"], size) == size
    assert int(counted.read_text()) == size
    assert await _run(["sh", "-c", "cat >/dev/null"], size) == size
    assert await _run(["head", "-c", str(size)], size) == size  # reads exactly the input, not to its end
    assert await _run(READS_10_AFTER_THE_END, min(size, 10)) == min(size, 10)


async def test_an_empty_stream_into_a_command_that_reads_nothing_succeeds() -> None:
    assert await _run(["true"], 0) == 0


async def test_a_reader_left_in_the_background_is_not_judged_by_the_shell_exit() -> None:
    # The shell exits at once; its background cat (same process group; fd 3, as a shell gives a background
    # command /dev/null for stdin) reads the input after it.
    assert await _run(["sh", "-c", "exec 3<&0; cat <&3 >/dev/null &"], 60_000) == 60_000


async def test_a_background_reader_in_a_group_not_its_own_is_not_judged_either() -> None:
    # start_new_session=False: the command shares our group, so nothing tells whether its background reader lives
    # on; before, its 60,000 bytes were "left unread" and the feed failed
    argv = ["sh", "-c", "exec 3<&0; (exec 2>&-; sleep 0.5; cat <&3 >/dev/null) &"]
    assert await _run(argv, 60_000, start_new_session=False) == 60_000


async def test_where_the_pipe_cannot_be_looked_into_small_input_is_not_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(fd: int, *_: object) -> int:
        raise FileNotFoundError(f"/proc/self/fd/{fd}")

    monkeypatch.setattr(pipes, "_reopened", no_proc)
    assert await _run(READS_10_AFTER_THE_END, 100) == 100  # the documented limit, not a guess
