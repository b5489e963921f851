"""to_fd into a terminal or socket that stops taking data leaves the event loop running.

Before: to_fd wrote a pipe, tty or socket in ``PIPE_BUF`` slices once the loop said it had room, with a blocking
``write``. A pipe with room takes ``PIPE_BUF`` bytes without blocking; a terminal is "writable" with a single byte
of room (less still after ``\\n`` becomes ``\\r\\n``), so the write blocked, and with it the whole event loop, until
someone read the terminal: a cancel (``serve --out -`` on SIGTERM) could not run. Now the bytes go through a
non-blocking twin of the fd (the same pipe or terminal opened again, a socket sent with ``MSG_DONTWAIT``), and the
caller's fd and its mode are left as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import socket
import threading
import tty
from collections.abc import Callable, Iterator

import pytest

import iii_channels
from iii.channels import ChannelWriter
from iii_channels import ChannelSink
from iii_engine.channels import ChannelRelay
from tests.polling import until
from tests.unit.channels_adapters.test_channels_attack_adapters import ends
from tests.unit.channels_adapters.test_channels_attack_adapters import relay as _relay

pytestmark = pytest.mark.timeout(30)
relay = _relay  # the fixture, shared

RESCUE_S = 8.0
"""How long a blocked event loop is left blocked before the test's thread reads the terminal to free it."""


class _Rescuer:
    """Reads ``master`` from a thread of its own if the test has not finished within :data:`RESCUE_S`: a loop
    blocked in a write to the terminal could otherwise never end the test. ``rescued`` tells whether it had to."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.done = threading.Event()
        self.rescued = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.done.wait(RESCUE_S):
            return
        self.rescued = True
        while not self.done.is_set():
            if select.select([self.master], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    os.read(self.master, 1 << 16)

    def stop(self) -> None:
        self.done.set()
        if self._thread.is_alive():
            self._thread.join()


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal (master, slave) in its default (cooked) mode; nobody reads the master."""
    master, slave = pty.openpty()
    yield master, slave
    os.close(slave)
    os.close(master)


def _fill(path: str) -> None:
    """Fill the terminal through a non-blocking fd of its own, then leave the room of one byte."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b"y" * 4096)
    finally:
        os.close(fd)


async def _send(writer: ChannelWriter, data: bytes) -> None:
    async with ChannelSink(writer) as sink:
        await sink.write(data)


async def test_to_fd_into_a_terminal_nobody_reads_can_be_cancelled(relay: tuple[str, ChannelRelay],
                                                                   terminal: tuple[int, int]) -> None:
    master, slave = terminal
    _fill(os.ttyname(slave))
    os.read(master, 1)  # one byte of room: the terminal says it is writable
    writer, reader = ends(*relay)
    sending = asyncio.ensure_future(_send(writer, b"line\n" * 20_000))
    rescuer = _Rescuer(master)
    got = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal got
        got = done

    copying = asyncio.ensure_future(iii_channels.to_fd(reader, slave, progress=progress))
    try:
        await until(lambda: got > 0)  # a chunk is in hand, to be written into the full terminal
        ticks = 0
        for _ in range(20):  # the loop keeps turning while the terminal takes nothing
            await asyncio.sleep(0)
            ticks += 1
        copying.cancel()
        await asyncio.wait({copying}, timeout=5)
        rescuer.stop()
        assert not rescuer.rescued, "the event loop was blocked in a write to the terminal until it was read"
        assert ticks == 20
        assert copying.cancelled()
    finally:
        rescuer.stop()
        sending.cancel()
        await asyncio.gather(sending, copying, return_exceptions=True)
        await writer.abort()
    assert os.get_blocking(slave), "the caller's fd keeps its mode"


@pytest.mark.parametrize("into", ["terminal", "master"])
async def test_to_fd_writes_every_byte_to_a_terminal(relay: tuple[str, ChannelRelay], terminal: tuple[int, int],
                                                     into: str) -> None:
    # Raw mode: the terminal passes bytes through unchanged, so they can be compared. A master is written by a
    # thread of the copy's own (it has no twin), a terminal through its twin.
    master, slave = terminal
    tty.setraw(slave)
    written, read = (slave, master) if into == "terminal" else (master, slave)
    payload = os.urandom(2 << 20)
    writer, reader = ends(*relay)
    collected = asyncio.get_running_loop().run_in_executor(None, _drain, lambda: os.read(read, 1000), len(payload))
    opened = _opened(os.ttyname(slave))
    _, count = await asyncio.wait_for(asyncio.gather(
        _send(writer, payload), iii_channels.to_fd(reader, written, require_trailer=True)), 20)
    assert count == len(payload)
    assert await asyncio.wait_for(collected, 10) == payload
    assert _opened(os.ttyname(slave)) == opened  # the twin is closed


def _drain(read: Callable[[], bytes], size: int) -> bytes:
    """What ``read`` gives, in a thread, until ``size`` bytes or its end."""
    parts: list[bytes] = []
    got = 0
    while got < size and (chunk := read()):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _opened(path: str) -> int:
    """How many of this process's fds are open on ``path``."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}") == path
    return count


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
async def test_to_fd_writes_every_byte_to_a_socket_with_a_small_send_buffer(relay: tuple[str, ChannelRelay],
                                                                           blocking: bool) -> None:
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(blocking)
    payload = os.urandom(2 << 20)
    writer, reader = ends(*relay)
    collected = asyncio.get_running_loop().run_in_executor(None, _drain, lambda: peer.recv(777), len(payload))
    try:
        _, count = await asyncio.wait_for(asyncio.gather(
            _send(writer, payload), iii_channels.to_fd(reader, ours.fileno(), require_trailer=True)), 20)
    finally:
        ours.shutdown(socket.SHUT_WR)
    assert count == len(payload)
    assert await asyncio.wait_for(collected, 10) == payload
    assert os.get_blocking(ours.fileno()) is blocking  # the caller's socket keeps its mode
    ours.close()
    peer.close()


async def test_to_fd_into_a_terminal_master_whose_terminal_reads_nothing_leaves_the_loop_running(
        relay: tuple[str, ChannelRelay], terminal: tuple[int, int]) -> None:
    # A master (/dev/ptmx) has no twin: before, it was written in PIPE_BUF slices on the loop once it said it had
    # room, and the write blocked until the terminal's side read (a cooked terminal, lines nobody reads: 1 run in
    # 4 held the whole loop). Its writes now go through a thread of their own (iii_channels.thread_writes).
    master, slave = terminal
    writer, reader = ends(*relay)
    sending = asyncio.ensure_future(_send(writer, (b"x" * 99 + b"\n") * 20_000))
    copying = asyncio.ensure_future(iii_channels.to_fd(reader, master))
    rescue = threading.Timer(RESCUE_S, lambda: _drain_for(slave, 1.0))  # frees a blocked loop, and says so below
    rescue.daemon = True
    rescue.start()
    try:
        for _ in range(3):  # the terminal took what it could long before the end: the copy waits on it
            gaps = await _loop_gaps(0.3)
            assert max(gaps) < 0.25 and not copying.done(), (max(gaps), copying)
        copying.cancel()
        await asyncio.wait({copying}, timeout=5)
        assert copying.cancelled()
        assert not rescue.finished.is_set(), "the event loop was blocked in a write to the master"
    finally:
        rescue.cancel()
        sending.cancel()
        await asyncio.gather(sending, copying, return_exceptions=True)
        await writer.abort()
    assert os.get_blocking(master), "the caller's fd keeps its mode"
    # the cancelled copy's thread is still in its last write (at most thread_writes.SLICE bytes): it ends once the
    # terminal reads, and starts no other
    stuck = [t for t in threading.enumerate() if t.name == f"iii-channels-write-fd{master}"]
    assert len(stuck) <= 1 and all(t.daemon for t in stuck)
    await asyncio.get_running_loop().run_in_executor(None, _drain_for, slave, 0.5)
    for thread in stuck:
        thread.join(5)
        assert not thread.is_alive()


async def _loop_gaps(seconds: float) -> list[float]:
    """The gaps between turns of the loop, each asked for 10 ms after the last, for ``seconds``."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    start = last = loop.time()
    while last - start < seconds:
        await asyncio.sleep(0.01)
        now = loop.time()
        gaps.append(now - last)
        last = now
    return gaps


def _drain_for(fd: int, seconds: float) -> None:
    """Read ``fd`` for ``seconds`` (a thread's rescue of a loop blocked writing the other side)."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if select.select([fd], [], [], 0.1)[0]:
            with contextlib.suppress(OSError):
                os.read(fd, 1 << 16)
