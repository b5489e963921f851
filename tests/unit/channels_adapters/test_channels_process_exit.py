"""Subprocess adapters never wait without bound for a process or its stderr.

Before: ``from_process`` waited for good on a process that closed its stdout but never exited, and both adapters
waited for stderr to end, which a background child holding it kept open for as long as it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import iii_channels
from iii_channels import ChannelSink, ChannelSource, ProcessError
from iii_engine.channels import ChannelRelay
from tests.unit.channels.relay_server import relay_server
from tests.unit.channels_adapters.test_channels_attack_adapters import ends

pytestmark = pytest.mark.timeout(30)

# Closes its stdout, then runs on (as a daemon that forgot to exit would).
CLOSES_STDOUT_RUNS_ON = ("import os, sys, time; sys.stdout.write('x' * 100); sys.stdout.flush(); os.close(1); "
                         "time.sleep(60)")


def leaves_stderr_open(pidfile: Path, exit_code: int = 0) -> list[str]:
    """A command that leaves a child holding its stderr open for 20 s after it exited (the child's pid in
    ``pidfile``, so the test can end it)."""
    script = ("import subprocess, sys; sys.stderr.write('warned\\n'); sys.stderr.flush(); "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)'], "
              f"stdout=subprocess.DEVNULL); open({str(pidfile)!r}, 'w').write(str(child.pid)); "
              f"sys.stdout.write('out'); sys.exit({exit_code})")
    return [sys.executable, "-c", script]


@pytest.fixture
async def pidfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """Where the command writes its child's pid; at the end the child is killed and the adapter's process awaited
    until its pipes close, so no transport outlives the test's loop."""
    path = tmp_path / "child.pid"
    started: list[asyncio.subprocess.Process] = []
    real = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        started.append(await real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    yield path
    if path.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(path.read_text()), signal.SIGKILL)
    for proc in started:
        await asyncio.wait_for(proc.wait(), 10)  # returns once its pipes are closed too


@pytest.fixture
async def relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(attach_timeout_s=5.0)) as served:
        yield served


async def test_a_process_that_closes_stdout_but_never_exits_is_killed_and_the_stream_aborted(
        relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)
    producing = asyncio.ensure_future(iii_channels.from_process(
        writer, [sys.executable, "-c", CLOSES_STDOUT_RUNS_ON], exit_timeout=0.5))
    source = ChannelSource(reader)
    with pytest.raises(iii_channels.ChannelAbortedError):
        await asyncio.wait_for(source.read_all(), 10)
    with pytest.raises(ProcessError, match=r"did not exit within 0\.5 s of closing its stdout; killed") as failed:
        await asyncio.wait_for(producing, 10)
    assert failed.value.returncode is None


async def test_a_background_child_holding_stderr_does_not_hold_from_process(relay: tuple[str, ChannelRelay],
                                                                            pidfile: Path) -> None:
    writer, reader = ends(*relay)
    producing = asyncio.ensure_future(iii_channels.from_process(writer, leaves_stderr_open(pidfile)))
    assert await asyncio.wait_for(ChannelSource(reader).read_all(), 10) == b"out"
    assert await asyncio.wait_for(producing, 10) == 3  # within the 1 s stderr grace, not the child's 20 s


async def test_a_failing_process_still_reports_the_stderr_a_background_child_keeps_open(
        relay: tuple[str, ChannelRelay], pidfile: Path) -> None:
    writer, reader = ends(*relay)
    producing = asyncio.ensure_future(iii_channels.from_process(writer, leaves_stderr_open(pidfile, 3)))
    with pytest.raises(iii_channels.ChannelAbortedError):
        await asyncio.wait_for(ChannelSource(reader).read_all(), 10)
    with pytest.raises(ProcessError, match="failed with exit status 3: warned"):
        await asyncio.wait_for(producing, 10)


async def test_to_process_bounds_the_run_after_its_input_only_when_asked(relay: tuple[str, ChannelRelay]) -> None:
    writer, reader = ends(*relay)

    async def feed() -> None:
        async with ChannelSink(writer) as sink:
            await sink.write(b"data")

    feeding = asyncio.ensure_future(feed())
    script = "import sys, time; sys.stdin.read(); time.sleep(60)"
    with pytest.raises(ProcessError, match=r"did not exit within 0\.5 s of the end of its input; killed"):
        await asyncio.wait_for(iii_channels.to_process(reader, [sys.executable, "-c", script], exit_timeout=0.5), 10)
    await asyncio.wait_for(feeding, 10)
