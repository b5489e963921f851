"""``from_process`` read the command's stdout to its end before ``exit_timeout`` started: a process the command
left behind holding stdout (``sh -c 'sleep 30 & echo hi'``) kept it waiting for as long as that process lived,
after the command itself had exited."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import iii_channels
from iii_channels import ChannelAbortedError, ChannelSource, ProcessError
from iii_engine.testing import local_channel

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("detach", ["", "setsid "])
async def test_stdout_held_after_the_exit_is_bounded_by_exit_timeout(detach: str) -> None:
    """In the command's group (killed with it) or outside it (``setsid``: our pipes are closed on it)."""
    script = f"{detach}sleep 20 & echo hi"
    started = time.monotonic()
    async with local_channel() as ch:
        sent, received = await asyncio.gather(
            iii_channels.from_process(ch.writer, ["sh", "-c", script], exit_timeout=0.5),
            ChannelSource(ch.reader, require_trailer=True).read_all(), return_exceptions=True)
    took = time.monotonic() - started
    # before: both waited the 20 s of the sleep (and the test's 30 s timeout with a longer one)
    assert took < 10, took
    assert isinstance(sent, ProcessError), repr(sent)
    assert "exited (status 0) but its stdout stayed open 0.5 s after" in str(sent)
    assert isinstance(received, ChannelAbortedError), repr(received)



async def test_exit_timeout_zero_never_takes_the_end_on_its_way_for_a_holder() -> None:
    """With ``exit_timeout=0`` the exit is often seen before the end of stdout that is already on its way: 14 of 40
    plain ``head -c 200000 /dev/zero`` failed "stayed open 0 s after (held by a process it left behind?)"."""
    held = []
    async with local_channel() as ch:
        for _ in range(30):
            channel = await ch.iii.create_channel_async()
            sent, _ = await asyncio.gather(
                iii_channels.from_process(channel.writer, ["head", "-c", "200000", "/dev/zero"], exit_timeout=0),
                ChannelSource(channel.reader).read_all(), return_exceptions=True)
            if isinstance(sent, ProcessError) and "stayed open" in str(sent):
                held.append(str(sent))
    assert held == [], held


@pytest.mark.parametrize("exit_timeout", [-1, float("nan"), float("inf")])
async def test_exit_timeout_must_be_a_finite_number_of_seconds(exit_timeout: float) -> None:
    async with local_channel() as ch:
        sent, received = await asyncio.gather(
            iii_channels.from_process(ch.writer, ["true"], exit_timeout=exit_timeout),
            ChannelSource(ch.reader).read_all(), return_exceptions=True)
    # before: -1 and nan passed through to the waits (inf too: an OverflowError deep in asyncio, or no bound)
    assert isinstance(sent, ValueError), repr(sent)
    assert f"exit_timeout must be 0 or more seconds (and finite) or None, got {exit_timeout!r}" in str(sent)
    assert isinstance(received, ChannelAbortedError), repr(received)


@pytest.mark.parametrize(("detach", "popen", "said"), [
    ("", {}, "the rest of its process group was killed"),
    ("setsid ", {}, "no process of its group was left to kill: the process holding its stdout is outside it"),
    ("", {"start_new_session": False}, "no process group of its own (start_new_session=False or a process_group "
                                       "given), so none was killed"),
])
async def test_the_error_says_whether_the_holder_was_killed(tmp_path: Path, detach: str, popen: dict[str, Any],
                                                            said: str) -> None:
    pid_file = tmp_path / "pid"
    script = f"{detach}sleep 25 & echo $! > {pid_file}; echo hi"
    try:
        async with local_channel() as ch:
            sent, _ = await asyncio.gather(
                iii_channels.from_process(ch.writer, ["sh", "-c", script], exit_timeout=0.3, **popen),
                ChannelSource(ch.reader).read_all(), return_exceptions=True)
        # before: "…; killed" in all three, though the sleep outside the group killed ran on
        assert isinstance(sent, ProcessError), repr(sent)
        assert said in str(sent), str(sent)
        assert not str(sent).endswith("; killed"), str(sent)
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
