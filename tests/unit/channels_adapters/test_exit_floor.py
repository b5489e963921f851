"""``from_process(exit_timeout=0)`` never kills a command that closed its stdout by exiting.

A process closes its files early in its exit and its pidfd shows the exit only at the end: at a deadline of 0 s
the pidfd could still say "running", and 26 of 400 plain commands (``true``, ``echo``, ``sh -c 'exit 3'``) were
killed and reported as "did not exit within 0 s"; an ``exit 3`` lost its status so. The exit is now waited for at
least ``EXIT_FLOOR_S``; a command that really goes on running is still killed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iii_channels import ChannelSource, ProcessError, pipes
from iii_engine.testing import local_channel

COMMANDS = {"true": (["true"], None), "echo": (["echo", "hi"], None), "exit3": (["sh", "-c", "echo hi; exit 3"], 3)}


async def _run(argv: list[str]) -> BaseException | None:
    async with local_channel() as channel:
        sent, _ = await asyncio.gather(pipes.from_process(channel.writer, argv, exit_timeout=0),
                                       ChannelSource(channel.reader).read_all(), return_exceptions=True)
    return sent if isinstance(sent, BaseException) else None


@pytest.mark.parametrize("name", sorted(COMMANDS))
async def test_a_command_that_exits_is_never_taken_for_one_still_running(name: str) -> None:
    argv, status = COMMANDS[name]
    outcomes = [await _run(argv) for _ in range(40)]  # before: ~7 % each, so 40 runs all fine ~5 % of the time
    killed = [str(error) for error in outcomes if error is not None and "did not exit" in str(error)]
    assert killed == [], f"{len(killed)} of 40 killed: {killed[0]}"
    if status is None:
        assert outcomes == [None] * 40
    else:
        assert all(isinstance(error, ProcessError) and error.returncode == status for error in outcomes), outcomes


async def test_a_command_still_running_is_killed_soon_after_the_floor() -> None:
    started = time.monotonic()
    error = await _run(["sh", "-c", "exec 1>&-; sleep 30"])  # closes its stdout, never exits
    took = time.monotonic() - started
    assert isinstance(error, ProcessError) and "did not exit within 0.1 s" in str(error), error
    assert pipes.EXIT_FLOOR_S <= took < 5, took
