"""Sync calls on a channel writer whose event loop runs in another thread (the SDK's own loop, a loop of the
user's): the call is handed to that loop, and it must end when that loop stops, when the caller is interrupted, and
when two threads close at once.

Before: a loop stopped and closed without cancelling its tasks (as the SDK client's shutdown leaves it) never
settled the handed-over call, so its caller waited for good and kept the process from exiting; Ctrl-C left the
write going on without its caller (a retry sent the bytes twice); two sync closes at once could raise
``ChannelClosedError`` though the stream got through."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III
from iii.channels import ChannelAbortedError, ChannelLoopError
from iii.types import Channel
from tests.integration.sdk.conftest import RealEngineThread

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def remote() -> Iterator[RealEngineThread]:
    """An engine in a thread of its own."""
    with RealEngineThread() as served:
        yield served


@pytest.fixture
def channel(remote: RealEngineThread) -> Iterator[Channel]:
    """A channel of a client connected to ``remote`` (a large buffer nobody reads)."""
    client = III(remote.url)
    try:
        yield client.create_channel(buffer_size=64 * 1024)
    finally:
        client.shutdown()


@pytest.fixture
def home() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop running in a thread of its own: the writer's, once it is first used there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    # A test closes it with its tasks pending: their coroutines are ended here, where no loop runs, rather than when
    # they happen to be collected (their clean-up then ran against whatever loop ran there: another test's).
    for task in asyncio.all_tasks(loop):
        with contextlib.suppress(Exception):
            task.get_coro().close()


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler, as an interactive run has it: a process started in the background by a shell
    without job control has SIGINT ignored, and ``interrupt_main()`` then did nothing (the write hung to the
    test's timeout)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _blocked_write(channel: Channel, outcome: dict[str, Any], size: int = 32 * 1024 * 1024) -> threading.Thread:
    def produce() -> None:
        try:
            channel.writer.stream.write(b"x" * size)  # blocks: nobody reads
            outcome["result"] = "returned"
        except BaseException as exc:  # (the outcome is what is tested)
            outcome["result"] = exc

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return thread


def test_a_sync_write_ends_when_its_writers_loop_stops(
        remote: RealEngineThread, channel: Channel, home: asyncio.AbstractEventLoop) -> None:
    """The write is more than the engine's queue and every socket buffer on the way hold (before: 32 MiB, which
    those buffers, tuned by the kernel, could take whole: the write returned and the test failed)."""
    asyncio.run_coroutine_threadsafe(channel.writer.write(b"a"), home).result(10)  # the writer's loop: home
    outcome: dict[str, Any] = {}
    producer = _blocked_write(channel, outcome, 128 * 1024 * 1024)
    remote.run(remote.engine.channels.wait_full(channel.writer.ref.channel_id), 20)  # the write waits now
    assert producer.is_alive(), outcome
    home.call_soon_threadsafe(home.stop)  # stopped and closed by its owner, its tasks never cancelled
    while home.is_running():
        time.sleep(0.01)
    home.close()
    producer.join(5)
    assert not producer.is_alive(), "the sync write still waits on a loop that is closed"
    assert isinstance(outcome["result"], ChannelLoopError), outcome
    assert "lost the event loop" in str(outcome["result"])


def test_ctrl_c_during_a_sync_write_handed_to_another_loop_aborts_the_stream(
        channel: Channel, home: asyncio.AbstractEventLoop, ctrl_c: None) -> None:
    asyncio.run_coroutine_threadsafe(channel.writer.write(b"a"), home).result(10)
    timer = threading.Timer(0.5, _thread.interrupt_main)  # Ctrl-C, in this (the main) thread, mid-write
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        channel.writer.stream.write(b"x" * (64 * 1024 * 1024))
    timer.join()
    reader = channel.reader

    async def read() -> bytes:
        return await reader.read_all()

    with pytest.raises(ChannelAbortedError):  # before: the reader got all 64 MiB and a normal end of stream
        asyncio.run_coroutine_threadsafe(read(), home).result(15)


def test_two_sync_closes_at_once_both_return(channel: Channel) -> None:
    writer = channel.writer
    writer.stream.write(b"y" * 100_000)  # a private loop of the writer's, from this thread with no loop
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def close() -> None:
        start.wait()
        try:
            writer.close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=close) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == []
