"""iii_engine.testing.local_channel: a working channel pair, and nothing left running afterwards whatever the body
or the start-up did (engine stopped, client shut down, tasks and threads back to what they were)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from iii import III
from iii.types import Channel
from iii_channels import ChannelSource, sink
from iii_engine import EngineConfig, EngineStartError
from iii_engine.modules.worker.module import WorkerModule
from iii_engine.server import Listener
from iii_engine.testing import LocalChannel, local_channel

THREADS_END_WITHIN_S = 5.0


@asynccontextmanager
async def nothing_left_running() -> AsyncIterator[None]:
    """Fail unless the threads and the tasks of this loop after the block are the ones from before it."""
    loop = asyncio.get_running_loop()
    # This loop's default executor thread, should anything in the block start it, is the loop's and goes with it:
    # started beforehand, it is not counted as left behind.
    await loop.run_in_executor(None, lambda: None)
    threads = set(threading.enumerate())
    tasks = asyncio.all_tasks()
    try:
        yield
    finally:
        extra_tasks = [t for t in asyncio.all_tasks() - tasks if not t.done()]
        assert extra_tasks == [], f"tasks left running: {extra_tasks}"
        # The client's thread pools are shut down without waiting (shutdown(wait=False)): their idle threads end on
        # their own just after. Wait for each to end, within a bound; a thread still running then was left behind.
        deadline = loop.time() + THREADS_END_WITHIN_S
        extra_threads = [t for t in threading.enumerate() if t not in threads]
        for thread in extra_threads:
            await loop.run_in_executor(None, thread.join, max(0.0, deadline - loop.time()))
        left = [t.name for t in extra_threads if t.is_alive()]
        assert left == [], f"threads left running: {left}"


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_ends_carry_data_and_the_client_makes_more_channels() -> None:
    async with nothing_left_running(), local_channel() as ch:
        port = ch.engine.port
        assert isinstance(ch, LocalChannel) and isinstance(ch, Channel)
        assert ch.iii.get_connection_state() == "connected" and ch.engine.ready.is_set()
        onward = await ch.iii.create_channel_async()
        async with sink(ch.writer) as out:
            await out.write(b"abc")
        reading = ChannelSource(ch.reader, require_trailer=True).read_all()
        async with sink(onward.writer) as out:
            await out.write(b"def")
        assert await reading == b"abc"
        assert await ChannelSource(onward.reader, require_trailer=True).read_all() == b"def"
    assert refuses_connections(port)
    assert ch.iii.get_connection_state() == "disconnected"


async def test_buffer_size_reaches_the_engine() -> None:
    async with local_channel(buffer_size=7) as ch:
        await ch.writer.write(b"x")  # attached: the channel is live in the engine's relay
        assert ch.engine.channels.stats(ch.writer_ref.channel_id)["capacity"] == 7


async def test_body_exception_propagates_and_everything_stops() -> None:
    failure = ValueError("the body failed")
    seen: list[tuple[LocalChannel, int]] = []
    async with nothing_left_running():
        with pytest.raises(ValueError) as raised:
            async with local_channel() as ch:
                seen.append((ch, ch.engine.port))
                await ch.writer.write(b"half a stream")  # an end left open, connected
                raise failure
    assert raised.value is failure
    ((ch, port),) = seen
    assert refuses_connections(port)
    assert ch.iii.get_connection_state() == "disconnected"
    assert not ch.engine.ready.is_set()


async def test_cancelled_body_propagates_and_everything_stops() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with local_channel() as ch:
            entered.set()
            await ch.reader.read_all()  # the writer never writes: waits until cancelled

    async with nothing_left_running():
        task = asyncio.ensure_future(body())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_engine_that_cannot_start_fails_and_leaves_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with nothing_left_running():
            with pytest.raises(EngineStartError, match="cannot listen"):
                async with local_channel(config=EngineConfig(host="127.0.0.1", port=port, modules=[])):
                    pytest.fail("the body ran without an engine")


async def _hang(*args: Any, **kwargs: Any) -> Any:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("patch", "step"),
    [
        # a module whose start never returns (the engine has bound its port, not yet serving)
        (lambda mp: mp.setattr(WorkerModule, "start", _hang), "the engine did not start"),
        # an engine that accepts the connection and never answers
        (lambda mp: mp.setattr(III, "connect_async", _hang), "the client did not connect to ws://127.0.0.1:"),
        (lambda mp: mp.setattr(III, "create_channel_async", _hang), "the channel was not created"),
    ],
    ids=["engine", "connect", "create"],
)
async def test_a_start_up_that_hangs_times_out_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, patch: Callable[[pytest.MonkeyPatch], None], step: str
) -> None:
    patch(monkeypatch)
    listen = Listener.start

    async def start(self: Listener, *, serving: bool = True) -> None:
        await listen(self, serving=serving)
        ports.append(self.port)

    ports: list[int] = []
    monkeypatch.setattr(Listener, "start", start)
    began = time.monotonic()
    async with nothing_left_running():
        with pytest.raises(TimeoutError, match=f"local_channel: {step}.* within 0.5 s"):
            async with local_channel(start_timeout=0.5):
                pytest.fail("the body ran without a channel")
    assert time.monotonic() - began < 5.0
    assert len(ports) == 1 and refuses_connections(ports[0])  # the engine's port was bound, and is released


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), None, "5", True])
async def test_start_timeout_must_be_a_bound(bad: Any) -> None:
    async with nothing_left_running():
        with pytest.raises(ValueError, match="start_timeout must be a positive, finite number of seconds"):
            async with local_channel(start_timeout=bad):
                pytest.fail("started without a bound")
