"""``to_process`` when the stream fails mid-way: the command never sees the end of its input, and asyncio reaps it.

Before: on a failed stream (the writer aborted, the trailer did not match, a cancel) the command's stdin was closed
first and only then was its group killed, so the command could see a clean end of its input and finish its work on a
short or corrupt one although ``to_process`` raised (measured: a checksum mismatch let the command finish 4 times
in 20, an abort 9 in 40; ``sh -c 'cat > part && mv part final'`` placed a truncated ``final`` 3 times in 40). And the
kill signalled the leader again through ``Popen.kill()``, whose poll could reap it before asyncio's child watcher:
the watcher logged ``Unknown child process pid N, will report returncode 255`` and the returncode was 255, not -9
(10 cancels in 40).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iii.channels import ChannelWriter
from iii_channels import ChannelAbortedError, ChannelSink, IntegrityError, to_process
from iii_channels.integrity import Digest
from iii_engine.channels import ChannelRelay
from tests.polling import until
from tests.unit.channels_adapters.test_channels_attack_adapters import ends
from tests.unit.channels_adapters.test_channels_attack_adapters import relay as _relay

pytestmark = pytest.mark.timeout(30)
relay = _relay  # the fixture, shared

DATA = b"x" * 100_000


class Spawned:
    """The commands ``to_process`` starts, and whether a write end of each one's stdin pipe was still open in this
    process when its group was first killed (``False``: the command could have seen the end of its input first)."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.stdin_pipe: dict[int, str] = {}
        self.stdin_open_at_kill: dict[int, bool] = {}


def _holds(link: str) -> bool:
    """Whether an fd of this process is ``link`` (``pipe:[inode]``): here, only a write end of the command's stdin
    (to_process closes its copy of the read end once the command has started)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == link:
                return True
        except OSError:  # the fd listing itself, closed meanwhile
            continue
    return False


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Spawned:
    seen = Spawned()
    real_exec, real_killpg = asyncio.create_subprocess_exec, os.killpg

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        link = os.readlink(f"/proc/self/fd/{kwargs['stdin']}")
        proc = await real_exec(*args, **kwargs)
        seen.procs.append(proc)
        seen.stdin_pipe[proc.pid] = link
        return proc

    def killpg(pgid: int, sig: int) -> None:
        if pgid in seen.stdin_pipe:
            seen.stdin_open_at_kill.setdefault(pgid, _holds(seen.stdin_pipe[pgid]))
        real_killpg(pgid, sig)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    monkeypatch.setattr(os, "killpg", killpg)
    return seen


async def _abort(writer: ChannelWriter, consumed: Callable[[], bool]) -> None:
    sink = ChannelSink(writer)
    await sink.write(DATA)
    await until(consumed)
    await sink.abort("writer failed mid-stream")


async def _bad_trailer(writer: ChannelWriter, consumed: Callable[[], bool]) -> None:
    """The bytes, then a trailer of other bytes (one corrupted on the way, as the reader sees it)."""
    other = Digest()
    other.update(b"y" * len(DATA))
    await writer.write(DATA)
    await until(consumed)
    await writer.send_message_async(other.trailer())
    await writer.close_async()


async def _then_stall(writer: ChannelWriter, consumed: Callable[[], bool]) -> None:
    await writer.write(DATA)
    await asyncio.Event().wait()  # until the test ends it: the reader is cancelled meanwhile


@pytest.mark.parametrize("how, expected", [("abort", ChannelAbortedError), ("trailer", IntegrityError),
                                           ("cancel", asyncio.CancelledError)])
async def test_a_failed_stream_never_reaches_the_end_of_the_commands_input(
        relay: tuple[str, ChannelRelay], spawned: Spawned, tmp_path: Path, how: str,
        expected: type[BaseException]) -> None:
    """``cat > part && mv part final`` fed 100,000 bytes, all read into ``part``, then the stream fails: the
    command is killed while its stdin is still open, so ``final`` is never placed."""
    writer, reader = ends(*relay)
    part, final = tmp_path / "part", tmp_path / "final"

    def consumed() -> bool:
        return part.exists() and part.stat().st_size == len(DATA)

    feed = {"abort": _abort, "trailer": _bad_trailer, "cancel": _then_stall}[how]
    feeding = asyncio.ensure_future(feed(writer, consumed))
    receiving = asyncio.ensure_future(to_process(reader, ["sh", "-c", f"cat > {part} && mv {part} {final}"],
                                                 require_trailer=True))
    try:
        if how == "cancel":
            await until(consumed)
            receiving.cancel()
        with pytest.raises(expected):
            await asyncio.wait_for(receiving, 10)
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
    (proc,) = spawned.procs
    assert spawned.stdin_open_at_kill == {proc.pid: True}, "stdin was closed before the kill"
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    assert part.stat().st_size == len(DATA)


async def test_a_killed_command_is_reaped_by_asyncio_not_by_the_kill(
        relay: tuple[str, ChannelRelay], spawned: Spawned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's child watcher (a thread waiting in ``waitpid``) is held until the kill has run and the command is
    dead: a kill that polls the command itself (``Popen.kill``) reaps it then, before the watcher, which finds no
    child and reports 255 instead of -9."""
    gate = threading.Event()
    real_waitpid, real_killpg = os.waitpid, os.killpg

    def watcher_waits(pid: int, options: int) -> tuple[int, int]:
        if threading.current_thread() is not threading.main_thread():
            gate.wait(10)
        return real_waitpid(pid, options)

    def killpg_until_dead(pgid: int, sig: int) -> None:
        pidfd = os.pidfd_open(pgid)  # the leader: not reaped while the watcher waits at the gate
        try:
            real_killpg(pgid, sig)
            assert select.select([pidfd], [], [], 10)[0], "the leader did not die within 10 s"
        finally:
            os.close(pidfd)
        asyncio.get_running_loop().call_soon(gate.set)  # once the kill is over and to_process waits for the exit

    monkeypatch.setattr(os, "waitpid", watcher_waits)
    monkeypatch.setattr(os, "killpg", killpg_until_dead)
    writer, reader = ends(*relay)
    part = tmp_path / "part"
    feeding = asyncio.ensure_future(_then_stall(writer, lambda: True))
    receiving = asyncio.ensure_future(to_process(reader, ["sh", "-c", f"cat > {part}"]))
    try:
        await until(lambda: part.exists() and part.stat().st_size == len(DATA))
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(receiving, 10)
    finally:
        gate.set()
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
    (proc,) = spawned.procs
    assert proc.returncode == -signal.SIGKILL
    unknown = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "Unknown child" in r.getMessage()]
    assert unknown == []
