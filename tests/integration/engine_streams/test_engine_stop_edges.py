"""Edges of ``Engine.stop()``'s one deadline for its modules' store closes.

* A start that fails after store-backed modules started: the failing module's own store close (made in its start
  or in the stop after it) shares the deadline of the other modules' closes. Before: it was awaited on its own bound
  first, then the others got theirs: two bounds.
* ``stop()`` called while a stop is under way returns once that stop ended. Before: it returned at once, the stores
  still closing (``async with engine`` around a ``serve_forever`` stopped elsewhere left with its SQLite store open).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec, closing
from iii_engine.modules.base import ModuleStartError
from iii_streams import MemoryStream

from .helpers import engine_config
from .test_engine_stop_one_deadline import BOUND_S, _SilentClose

pytestmark = pytest.mark.timeout(30)


async def _stop_once_released(engine: Engine, began: asyncio.Event, release: asyncio.Event, failure: str) -> None:
    """Once ``began`` is set (what is under way holds there until ``release``) call ``engine.stop()``: it must not
    return before the release (else fail with ``failure``), and must return after it."""
    await asyncio.wait_for(began.wait(), 10)
    stop = asyncio.create_task(engine.stop())
    done, _ = await asyncio.wait({stop}, timeout=0.2)  # a wait for something that must NOT happen
    assert not done, failure
    release.set()
    await asyncio.wait_for(stop, 20)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held (listening) for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_failed_start_closes_every_store_under_one_deadline(
        taken_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", BOUND_S)
    silent = _SilentClose()
    monkeypatch.setattr(MemoryStream, "aclose", lambda self: silent())  # the state and the stream module's stores
    # the stream module opens its store, then fails to bind: its store's close and the state module's are both silent
    config = EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::state::StateModule", {}),
        ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": taken_port}),
    ])
    engine = Engine(config=config)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="iii_engine.closing"), pytest.raises(ModuleStartError) as failed:
        await asyncio.wait_for(engine.start(), 20)
    took = loop.time() - began
    assert "modules::stream::StreamModule" in str(failed.value)
    for name in ("state", "stream"):
        assert f"the {name} module's store (MemoryStream) did not end within" in caplog.text
    assert took < 1.6 * BOUND_S, took  # before: about 2 * BOUND_S (the stream store's bound, then the state one's)


async def test_a_second_stop_returns_once_the_stop_under_way_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    store = engine.module("state").store  # type: ignore[attr-defined]
    real_close = store.aclose
    closing_began, may_close, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def held_close() -> None:  # a store still flushing when the second stop comes
        closing_began.set()
        await may_close.wait()
        await real_close()
        closed.set()

    monkeypatch.setattr(store, "aclose", held_close)
    first = asyncio.create_task(engine.stop())
    await _stop_once_released(engine, closing_began, may_close,
                              "the second stop returned while the first was still closing the stores")
    assert closed.is_set()
    assert first.done() or await asyncio.wait_for(first, 10) is None


async def test_a_stop_during_the_start_stops_every_module_the_start_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from iii_engine import EngineStartError
    from iii_engine.modules.state.module import StateModule

    entered, may_start, state_store_closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real_start = StateModule.start

    async def gated_start(self: StateModule) -> None:  # the stop comes while this module starts
        entered.set()
        await may_start.wait()
        await real_start(self)
        real_close = self.store.aclose

        async def tracked_close() -> None:
            state_store_closed.set()
            await real_close()

        self.store.aclose = tracked_close  # type: ignore[method-assign]

    monkeypatch.setattr(StateModule, "start", gated_start)
    engine = Engine(config=engine_config())
    start = asyncio.create_task(engine.start())
    await _stop_once_released(engine, entered, may_start, "the stop returned while the start still started modules")
    with pytest.raises(EngineStartError, match="stopped during its start"):
        await start  # before: TypeError from the worker port closed under the start
    # before: the state module (and the queue, REST, pubsub and cron ones after it) ran on, their stores open
    assert state_store_closed.is_set()
    assert not engine.ready.is_set() and not engine.modules


async def test_a_stop_whose_caller_was_cancelled_goes_on_to_its_end() -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    port = engine.port
    state_stopping, state_may_stop = asyncio.Event(), asyncio.Event()
    stream_stopped = asyncio.Event()
    stream = engine.module("stream")
    real_stream_stop = stream.stop

    async def held_stop() -> None:  # the state module's stop waits: the caller gives up on the stop meanwhile
        state_stopping.set()
        await state_may_stop.wait()

    async def tracked_stop() -> None:
        await real_stream_stop()
        stream_stopped.set()

    engine.module("state").stop = held_stop  # type: ignore[method-assign]
    stream.stop = tracked_stop  # type: ignore[method-assign]
    stop = asyncio.create_task(engine.stop())
    await asyncio.wait_for(state_stopping.wait(), 10)
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop  # the caller's wait ends
    assert not stream_stopped.is_set()
    state_may_stop.set()
    # the stop goes on by itself, nobody awaiting it (before: cancelled in the state module's stop, the rest of the
    # stop left to a later call)
    await asyncio.wait_for(stream_stopped.wait(), 10)
    await asyncio.wait_for(engine.stop(), 20)  # returns once that stop ended
    with pytest.raises(OSError):  # the worker port is closed
        await asyncio.open_connection("127.0.0.1", port)
