"""``from_process`` read the command's stdout to its end before ``exit_timeout`` started: a process the command
left behind holding stdout (``sh -c 'sleep 30 & echo hi'``) kept it waiting for as long as that process lived,
after the command itself had exited."""

from __future__ import annotations

import asyncio
import time

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

