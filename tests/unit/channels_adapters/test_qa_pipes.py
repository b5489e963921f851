"""Subprocess and fd adapters: they kill what they started, and leave nothing blocked once stopped.

Before: a failed, timed-out or cancelled ``from_process`` / ``to_process`` killed the command alone; the rest of
its pipeline (``sh -c 'sleep 100 | cat'``) or its background child (``cmd &``) lived on, holding the pipes.
Now the command leads a session of its own and the whole group is killed; ``start_new_session=False`` opts out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import iii_channels
from iii.channels import ChannelWriter
from iii_channels import ChannelSink, ChannelSource, ProcessError, asyncio_internals, pipes
from iii_engine.channels import ChannelRelay
from tests.polling import until
from tests.unit.channels_adapters.test_attack_c2_adapters import _alive, _open_fds
from tests.unit.channels_adapters.test_channels_attack_adapters import ends, flood, writer_hears
from tests.unit.channels_adapters.test_channels_attack_adapters import relay as _relay

pytestmark = pytest.mark.timeout(30)
relay = _relay  # the fixture, shared


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                if int(stat.read().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry))
    return found


class Started:
    """The pids a test's command wrote to ``pidfile`` (one per line); every one still running is killed at the
    end, so a failing test leaves nothing behind."""

    def __init__(self, pidfile: Path) -> None:
        self.pidfile = pidfile
        self.extra: list[int] = []

    def pids(self) -> list[int]:
        text = self.pidfile.read_text() if self.pidfile.exists() else ""
        return [int(line) for line in text.split()] if text.endswith("\n") else []

    def reap(self) -> None:
        for pid in self.pids() + self.extra:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    pids = Started(tmp_path / "pids")
    yield pids
    pids.reap()


@pytest.fixture
async def feeder() -> AsyncIterator[list[asyncio.Future[None]]]:
    """Writers a test starts; cancelled and awaited at its end."""
    tasks: list[asyncio.Future[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_cancelled_pipeline_is_killed_whole(relay: tuple[str, ChannelRelay], started: Started) -> None:
    """``sh -c 'sleep 100 | cat'`` cancelled mid-stream: the shell, sleep and cat all go, and the command had a
    session of its own (before: sleep and cat lived on, cat holding our stdout pipe)."""
    writer, reader = ends(*relay)
    script = f"echo $$ > {started.pidfile}; echo started; sleep 100 | cat"
    producing = asyncio.ensure_future(iii_channels.from_process(writer, ["sh", "-c", script]))
    source = ChannelSource(reader)
    assert await asyncio.wait_for(source.readline(), 10) == b"started\n"
    shell = started.pids()[0]
    await until(lambda: len(_children(shell)) == 2)
    pipeline = _children(shell)
    started.extra += pipeline
    sessions = {os.getsid(pid) for pid in pipeline}
    producing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(producing, 10)
    await until(lambda: not any(_alive(pid) for pid in [shell, *pipeline]), 5)
    assert sessions == {shell}, "the command did not lead a session of its own"
    with pytest.raises(iii_channels.ChannelAbortedError):
        await asyncio.wait_for(source.read_all(), 10)


@pytest.mark.parametrize("how", ["exit_timeout", "failed"])
async def test_a_failed_command_leaves_no_background_child(relay: tuple[str, ChannelRelay], started: Started,
                                                          how: str) -> None:
    """The shell closes stdout and starts ``sleep 100 &``, then waits (killed at exit_timeout) or exits 3: sleep
    goes with it, at once (before: it lived its 100 s)."""
    writer, reader = ends(*relay)
    stop = "wait" if how == "exit_timeout" else "exit 3"
    script = f"exec >&-; sleep 100 & echo $! > {started.pidfile}; {stop}"
    results = await asyncio.wait_for(asyncio.gather(
        iii_channels.from_process(writer, ["sh", "-c", script], exit_timeout=0.3),
        ChannelSource(reader).read_all(), return_exceptions=True), 10)
    assert isinstance(results[0], ProcessError), results[0]
    assert ("killed" in str(results[0])) if how == "exit_timeout" else results[0].returncode == 3
    assert isinstance(results[1], iii_channels.ChannelAbortedError)
    (sleeper,) = started.pids()
    await until(lambda: not _alive(sleeper), 5)


async def test_to_process_kills_the_group_of_a_command_that_outlives_its_timeout(
        relay: tuple[str, ChannelRelay], started: Started, feeder: list[asyncio.Future[None]]) -> None:
    writer, reader = ends(*relay)

    async def feed() -> None:
        async with ChannelSink(writer) as sink:
            await sink.write(b"data")

    feeder.append(asyncio.ensure_future(feed()))
    script = f"sleep 100 & echo $! > {started.pidfile}; cat > /dev/null; wait"
    with pytest.raises(ProcessError, match=r"did not exit within 0\.3 s"):
        await asyncio.wait_for(iii_channels.to_process(reader, ["sh", "-c", script], exit_timeout=0.3), 10)
    (sleeper,) = started.pids()
    await until(lambda: not _alive(sleeper), 5)


async def test_start_new_session_false_keeps_the_command_in_our_group_and_kills_only_it(
        relay: tuple[str, ChannelRelay], started: Started) -> None:
    """The opt-out: the command shares our session and group (a group kill would hit us), so only the command
    itself is killed; its background child is the caller's business."""
    writer, reader = ends(*relay)
    script = f"sleep 100 & echo $$ $! > {started.pidfile}; echo started; wait"
    producing = asyncio.ensure_future(iii_channels.from_process(
        writer, ["sh", "-c", script], start_new_session=False))
    source = ChannelSource(reader)
    assert await asyncio.wait_for(source.readline(), 10) == b"started\n"
    await until(lambda: len(started.pids()) == 2)
    shell, sleeper = started.pids()
    assert os.getsid(shell) == os.getsid(0) and os.getpgid(shell) == os.getpgid(0)
    producing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(producing, 10)
    await until(lambda: not _alive(shell), 5)
    assert _alive(sleeper)


@pytest.mark.parametrize("popen, owned", [
    ({}, True), ({"start_new_session": True}, True), ({"start_new_session": False}, False),
    ({"process_group": 0}, True), ({"process_group": 1}, False),
])
def test_who_owns_the_group(popen: dict[str, object], owned: bool) -> None:
    assert pipes._own_group(popen) is owned
    assert popen.get("start_new_session", False) is (owned and "process_group" not in popen)


@pytest.mark.parametrize("late_kill", [False, True], ids=["prompt kill", "kill after the stderr buffer filled"])
async def test_without_asyncios_private_transport_the_group_kill_still_frees_the_pipes(
        relay: tuple[str, ChannelRelay], started: Started, monkeypatch: pytest.MonkeyPatch, late_kill: bool) -> None:
    """The fallback of _close_pipes (asyncio's Process without the private transport this was written against):
    only the public stdin close is done, and the group kill ends the background child holding our pipes, so
    the run still ends promptly and holds no fd afterwards.

    (before: with the kill late enough for the child to fill asyncio's stderr buffer, as a loaded machine made it
    in a CI run, the unread stderr pipe was paused, never saw its end, and its fd stayed ours until the garbage
    collector came by; here the collector is off, so only our own closing counts.)"""
    monkeypatch.setattr(asyncio_internals, "MISSING", ("asyncio.subprocess.Process._transport",))
    if late_kill:
        kill = pipes._kill

        async def late(proc: asyncio.subprocess.Process, group: bool = False) -> None:
            await asyncio.sleep(0.3)  # `yes` writes well over asyncio's 128 KiB in that time
            await kill(proc, group)

        monkeypatch.setattr(pipes, "_kill", late)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        await _group_kill_frees_the_pipes(relay, started)
    finally:
        if was_enabled:
            gc.enable()


async def _group_kill_frees_the_pipes(relay: tuple[str, ChannelRelay], started: Started) -> None:
    writer, reader = ends(*relay)
    baseline = _open_fds()
    script = f"exec >&-; yes >&2 & echo $! > {started.pidfile}; exit 3"
    results = await asyncio.wait_for(asyncio.gather(
        iii_channels.from_process(writer, ["sh", "-c", script]), ChannelSource(reader).read_all(),
        return_exceptions=True), 10)
    assert isinstance(results[0], ProcessError) and results[0].returncode == 3
    (child,) = started.pids()
    await until(lambda: not _alive(child), 5)
    await until(lambda: _open_fds() <= baseline, 5)



async def test_without_asyncios_private_transport_a_daemon_writing_for_ever_costs_a_bounded_drain(
        relay: tuple[str, ChannelRelay], started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process the command left outside its group (``setsid``) that writes to stderr for ever: the fallback's
    drain reads it for DRAIN_S only, then lets the pipe pause (the daemon blocks), as before the drain. (before:
    read on without end, 0.9 core for as long as the daemon ran; uvloop, whose transport is not asyncio's, always
    takes this path.)"""
    monkeypatch.setattr(asyncio_internals, "MISSING", ("asyncio.subprocess.Process._transport",))
    monkeypatch.setattr(pipes, "DRAIN_S", 0.3)
    writer, reader = ends(*relay)
    script = f"setsid sh -c 'echo $$ > {started.pidfile}; exec yes spam >&2' & echo hi"
    await asyncio.wait_for(asyncio.gather(
        iii_channels.from_process(writer, ["sh", "-c", script], exit_timeout=0.2), ChannelSource(reader).read_all(),
        return_exceptions=True), 10)
    await until(lambda: bool(started.pids()), 5)
    await until(lambda: not pipes._DRAINING, 5)  # each drain ended at its deadline
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.monotonic()
    await asyncio.sleep(1.0)  # (a window to measure in, not a wait for something)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert _alive(started.pids()[0])  # the daemon still runs (blocked on its full pipe)
    assert used < 0.25 * (time.monotonic() - began), f"{used:.2f} s of CPU while the daemon wrote"
    started.reap()
    gc.collect()  # the paused pipe's transport goes while the loop runs (its __del__ needs the loop)


# A process that copies its stdin into a channel with from_fd, stops the copy after the first bytes (as `send -`
# does when the receiving function fails) and returns from asyncio.run.
STOPS_READING_STDIN = """
import asyncio, json, sys
import iii_channels
from iii.channels import ChannelWriter

async def main() -> None:
    writer = ChannelWriter(sys.argv[1], json.loads(sys.argv[2]))
    copying = asyncio.ensure_future(iii_channels.from_fd(writer, 0, progress=lambda done, total: copying.cancel()))
    await asyncio.wait({copying})
    print("stopped", flush=True)

asyncio.run(main())
"""


async def test_a_stopped_from_fd_on_a_quiet_pipe_lets_the_process_exit(relay: tuple[str, ChannelRelay]) -> None:
    """(before: the read of the quiet pipe blocked in a thread, which cancelling did not stop, and asyncio.run
    waited for it at exit: a ``send -`` whose function failed did not exit until its stdin ended.)"""
    base, served = relay
    refs = served.create(None, owner="w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STOPS_READING_STDIN, base, json.dumps(refs["writer"]),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"first")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"stopped\n"
        assert await asyncio.wait_for(proc.wait(), 5) == 0  # its stdin still open, and quiet
    finally:
        if proc.returncode is None:
            proc.kill()
        proc.stdin.close()
        await proc.wait()



# A process that copies a channel with to_fd into a pipe it filled itself and never reads, stops the copy once the
# first chunk is in hand (as `serve --out -` on SIGTERM) and returns from asyncio.run.
STOPS_WRITING_A_FULL_PIPE = """
import asyncio, json, os, sys
import iii_channels
from iii.channels import ChannelReader

async def main() -> None:
    reader = ChannelReader(sys.argv[1], json.loads(sys.argv[2]))
    _, full = os.pipe()
    os.set_blocking(full, False)
    try:
        while True:
            os.write(full, bytes(65536))
    except BlockingIOError:
        pass
    os.set_blocking(full, True)
    copying = asyncio.ensure_future(iii_channels.to_fd(reader, full, progress=lambda done, total: copying.cancel()))
    await asyncio.wait({copying})
    print("stopped", flush=True)

asyncio.run(main())
"""


async def test_a_stopped_to_fd_on_a_full_pipe_lets_the_process_exit(relay: tuple[str, ChannelRelay]) -> None:
    """(before: the write blocked in a thread, which cancelling did not stop, and asyncio.run waited for it at
    exit: ``iii-channel serve --out -`` whose stdout was not read ignored SIGTERM.)"""
    base, served = relay
    refs = served.create(None, owner="w")
    writer = ChannelWriter(base, refs["writer"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STOPS_WRITING_A_FULL_PIPE, base, json.dumps(refs["reader"]),
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    sending = asyncio.ensure_future(writer.write(b"x" * 1000))
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"stopped\n"
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await writer.abort()


@pytest.mark.parametrize("reader_pace", ["fast", "slow"])
async def test_to_fd_writes_every_byte_in_order_to_a_pipe(relay: tuple[str, ChannelRelay], reader_pace: str) -> None:
    """The writes in PIPE_BUF slices lose, repeat and reorder nothing, whether the pipe's reader keeps up or
    lets it fill (4 MiB through a 64 KiB pipe)."""
    writer, reader = ends(*relay)
    payload = os.urandom(4 << 20)
    read_fd, write_fd = os.pipe()
    loop = asyncio.get_running_loop()

    def drain() -> bytes:
        parts = []
        while chunk := os.read(read_fd, 1 << 20 if reader_pace == "fast" else 1000):
            parts.append(chunk)
        return b"".join(parts)

    collected = loop.run_in_executor(None, drain)
    try:
        _, count = await asyncio.wait_for(asyncio.gather(
            _send_all(writer, payload), iii_channels.to_fd(reader, write_fd, require_trailer=True)), 20)
    finally:
        os.close(write_fd)
    assert count == len(payload) and await collected == payload
    os.close(read_fd)


async def _send_all(writer: ChannelWriter, data: bytes) -> None:
    async with ChannelSink(writer) as sink:
        await sink.write(data)

async def test_from_fd_still_reads_a_regular_file(relay: tuple[str, ChannelRelay], tmp_path: Path) -> None:
    """A regular file cannot be watched by the loop: it is read in a thread, as before, to its end."""
    src = tmp_path / "data.bin"
    src.write_bytes(bytes(range(256)) * 4000)
    writer, reader = ends(*relay)
    fd = os.open(src, os.O_RDONLY)
    try:
        sent, data = await asyncio.wait_for(asyncio.gather(
            iii_channels.from_fd(writer, fd), ChannelSource(reader, require_trailer=True).read_all()), 10)
    finally:
        os.close(fd)
    assert sent == len(data) == 1_024_000 and data == src.read_bytes()


async def test_a_command_that_cannot_start_releases_the_other_end_at_once(relay: tuple[str, ChannelRelay],
                                                                         tmp_path: Path) -> None:
    """(before: FileNotFoundError to the caller, but from_process's reader and to_process's writer waited for the
    channel's attach deadline -- 300 s on our engine -- and then got ChannelExpiredError.)"""
    missing = str(tmp_path / "no-such-command")
    writer, reader = ends(*relay)
    with pytest.raises(FileNotFoundError):
        await iii_channels.from_process(writer, [missing])
    with pytest.raises(iii_channels.ChannelAbortedError) as aborted:
        await asyncio.wait_for(ChannelSource(reader).read_all(), 2)
    assert "from_process could not start 'no-such-command': FileNotFoundError" in aborted.value.reason

    writer, reader = ends(*relay, buffer_size=2)
    feeding = asyncio.ensure_future(flood(writer))
    with pytest.raises(FileNotFoundError):
        await iii_channels.to_process(reader, [missing])
    assert isinstance(await writer_hears(feeding, reader, within=2), iii_channels.ReaderGoneError)


@pytest.mark.parametrize("argv, error, message", [
    ("ls -l", TypeError, "argv must be a sequence of arguments, not one string: 'ls -l'"),
    (b"ls", TypeError, "not one string"),
    ([], ValueError, "argv must name a command, got an empty sequence"),
])
async def test_a_command_line_that_is_not_one_is_refused_by_name(
        relay: tuple[str, ChannelRelay], argv: object, error: type[Exception], message: str) -> None:
    writer, reader = ends(*relay)
    with pytest.raises(error, match=re.escape(message)):
        await iii_channels.from_process(writer, argv)  # type: ignore[arg-type]
    with pytest.raises(error, match=re.escape(message)):
        await iii_channels.to_process(reader, argv)  # type: ignore[arg-type]
