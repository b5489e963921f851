"""``pipes._read_events``: the one poll-now helper of ``iii_channels.pipes`` (it replaced ``_readable``, for a
pidfd, and a copy of the same poll in ``_stdout_writer_left``, for a stdout pipe's writer)."""

from __future__ import annotations

import asyncio
import os
import select

import pytest

from iii_channels import pipes

pytestmark = pytest.mark.timeout(30)


def test_a_pipes_events_as_its_writer_writes_and_leaves() -> None:
    read_end, write_end = os.pipe()
    try:
        try:
            assert pipes._read_events(read_end) == 0  # nothing to read, a writer left: no event
            os.write(write_end, b"x")
            assert pipes._read_events(read_end) == select.POLLIN
        finally:
            os.close(write_end)
        assert pipes._read_events(read_end) == select.POLLIN | select.POLLHUP  # its data, then its end
    finally:
        os.close(read_end)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd on this system")
async def test_a_pidfd_has_events_once_its_process_exited() -> None:
    proc = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE)
    pidfd = os.pidfd_open(proc.pid)
    try:
        assert pipes._read_events(pidfd) == 0  # running
        assert proc.stdin is not None
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert pipes._read_events(pidfd) & select.POLLIN
    finally:
        os.close(pidfd)
