"""The client's loop reads its wake-up socket once per wake-up: a call handed over from another thread (every sync
``trigger`` from the main thread) costs one read there, not a second one that only raises ``BlockingIOError``; and
every hand-over still runs, however many pile up before the loop gets to them."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iii.loop_bridge import LoopBridge


class _CountingSocket:
    """Stands in for the loop's end of its wake-up socket pair and counts the reads made on it."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.reads = 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        return self.real.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def bridge() -> Iterator[LoopBridge]:
    made = LoopBridge()
    try:
        yield made
    finally:
        made.stop()


def test_one_read_per_wake_up(bridge: LoopBridge) -> None:
    loop: Any = bridge.loop
    counting = _CountingSocket(loop._ssock)

    def swap() -> None:
        loop._ssock = counting  # on the loop thread, between two turns

    bridge.run(asyncio.sleep(0))  # the loop runs and is idle again
    done = threading.Event()
    loop.call_soon_threadsafe(swap)
    loop.call_soon_threadsafe(done.set)
    assert done.wait(5)
    bridge.run(asyncio.sleep(0))  # (run() hands its coroutine over the same way)
    reads_before = counting.reads
    for _ in range(20):
        woke = threading.Event()
        loop.call_soon_threadsafe(woke.set)
        assert woke.wait(5)
    loop._ssock = counting.real  # (the loop is idle in its poll: the next wake-up reads the real one)
    assert counting.reads - reads_before <= 20, f"{counting.reads - reads_before} reads for 20 wake-ups"


def test_every_hand_over_runs_when_many_pile_up(bridge: LoopBridge) -> None:
    """Thousands of hand-overs from several threads at once: more bytes than one read takes may wait on the wake-up
    socket, and every callback still runs (the bytes left keep the socket readable, so the loop reads on)."""
    ran = 0
    lock = threading.Lock()
    all_ran = threading.Event()
    per_thread, threads = 3000, 4

    def count() -> None:
        nonlocal ran
        with lock:
            ran += 1
            if ran == per_thread * threads:
                all_ran.set()

    gate = threading.Event()

    def flood() -> None:
        gate.wait()
        for _ in range(per_thread):
            bridge.loop.call_soon_threadsafe(count)

    block = threading.Event()
    bridge.loop.call_soon_threadsafe(block.wait, 5)  # hold the loop busy while the hand-overs pile up
    workers = [threading.Thread(target=flood) for _ in range(threads)]
    for worker in workers:
        worker.start()
    gate.set()
    for worker in workers:
        worker.join(10)
    block.set()
    assert all_ran.wait(10), f"{ran} of {per_thread * threads} hand-overs ran"

    async def after() -> str:
        return "still serving"

    assert bridge.run(after()) == "still serving"
