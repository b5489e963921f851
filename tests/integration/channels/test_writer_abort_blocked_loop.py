"""A writer's ``abort()`` made from another thread or loop while the writer's own loop is blocked (a sync handler
holding it, a loop thread stuck in C code) returns at once: the writer is aborted there and then (no later write or
close delivers the stream), and the abort is carried out on the writer's loop when it runs again. Before, the
caller was held until that loop ran, up to 15 s.

The reader never gets a clean end of stream: the abort reaches it once the loop runs, even when a close was under
way on that loop before the abort (it waited behind a write)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from iii import channels as channels_module
from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelWriter
from iii.types import Channel
from tests.integration.channels import test_sync_calls_home_elsewhere as elsewhere

pytestmark = pytest.mark.timeout(30)

# Its fixtures: an engine in a thread, a channel of a client of it, and the writer's loop in a thread of its own.
remote, channel, home = elsewhere.remote, elsewhere.channel, elsewhere.home

# Far below the 15 s the caller was held: the abort neither waits for the blocked loop nor for a deadline.
_RETURNS_WITHIN_S = 2.0


@contextlib.contextmanager
def _blocked(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """``loop`` held by a blocking call (what a sync handler on it does) until the block ends."""
    entered, release = threading.Event(), threading.Event()

    def block() -> None:
        entered.set()
        release.wait(25)

    loop.call_soon_threadsafe(block)
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()


def _timed_abort(writer: ChannelWriter) -> float:
    started = time.monotonic()
    asyncio.run(writer.abort("given up elsewhere"))  # another loop, in another thread than the writer's
    return time.monotonic() - started


def _read_to_the_end(channel: Channel) -> None:
    async def read() -> None:
        await asyncio.wait_for(channel.reader.read_all(), 15)

    with pytest.raises(ChannelAbortedError):  # never a clean end of stream
        asyncio.run(read())


def test_an_abort_while_the_writers_loop_is_blocked_returns_at_once(
        channel: Channel, home: asyncio.AbstractEventLoop) -> None:
    writer = channel.writer
    asyncio.run_coroutine_threadsafe(writer.write(b"the first half"), home).result(10)
    with _blocked(home):
        took = _timed_abort(writer)
        assert took < _RETURNS_WITHIN_S, f"abort() held its caller {took:.2f} s"
        assert writer.closed
        with pytest.raises(ChannelClosedError, match="aborted"):
            writer.close()  # the stream is aborted already: a close cannot hand the first half over as whole
    _read_to_the_end(channel)


def test_a_close_under_way_on_the_blocked_loop_does_not_deliver_the_stream(
        channel: Channel, home: asyncio.AbstractEventLoop) -> None:
    writer = channel.writer
    entered, release = threading.Event(), threading.Event()

    async def write_close_and_block() -> None:
        await writer.write(b"the first half")
        writer.stream.write(b"queued behind it")  # the close below waits for this queued write
        writer.close()  # under way: its task is made, and runs once the loop does
        entered.set()
        release.wait(25)  # a sync handler on the loop, before either task got to run

    asyncio.run_coroutine_threadsafe(write_close_and_block(), home)
    assert entered.wait(10)
    try:
        took = _timed_abort(writer)
    finally:
        release.set()
    assert took < _RETURNS_WITHIN_S, f"abort() held its caller {took:.2f} s"
    _read_to_the_end(channel)


def test_a_loop_blocked_past_the_bound_has_the_connection_dropped_without_the_caller(
        channel: Channel, home: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_module, "_ABORT_ELSEWHERE_S", 3.0)  # past _RETURNS_WITHIN_S
    writer = channel.writer
    asyncio.run_coroutine_threadsafe(writer.write(b"the first half"), home).result(10)
    with _blocked(home):
        took = _timed_abort(writer)
        assert took < _RETURNS_WITHIN_S, f"abort() held its caller {took:.2f} s"
        _read_to_the_end(channel)  # the loop still held: the abort reaches the reader as the dropped connection


def test_an_abort_with_no_thread_to_carry_it_drops_the_connection_and_does_not_raise(
        channel: Channel, home: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread can start (Python 3.12+ refuses new threads at the interpreter's exit; a process at its thread
    limit): abort() still never raises, and the reader sees the dropped connection as an abort. Before:
    ``RuntimeError: can't create new thread`` out of abort()."""
    writer = channel.writer
    asyncio.run_coroutine_threadsafe(writer.write(b"the first half"), home).result(10)

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refused)
        took = _timed_abort(writer)
    assert took < _RETURNS_WITHIN_S, f"abort() held its caller {took:.2f} s"
    assert writer.closed
    _read_to_the_end(channel)
