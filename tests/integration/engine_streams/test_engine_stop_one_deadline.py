"""``Engine.stop()`` gives its modules' store closes ONE deadline (``STORE_CLOSE_TIMEOUT_S`` after the last module's
stop), the closes running side by side: three silent stores hold the stop for one bound, not three, and a healthy
SQLite store next to a silent one still closes fully (its acknowledged writes are on disk, none is cut off).

Before: each module's stop awaited its own store's close for up to the bound, one module after another, so three
silent stores (stream, state, queue) held ``Engine.stop()`` three bounds.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, closing
from iii_streams import SQLStream, StreamClosedError
from iii_streams.deadlines import let_go_count

from .helpers import engine_config

pytestmark = pytest.mark.timeout(30)

BOUND_S = 1.0


class _SilentClose:
    """A close that waits for an answer that never comes; records when it started and when it was cancelled."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.cancelled: float | None = None

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            self.cancelled = loop.time()
            raise


async def test_three_silent_stores_hold_the_stop_one_bound_not_three(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", BOUND_S)
    engine = Engine(config=engine_config())
    await engine.start()
    silent = {name: _SilentClose() for name in ("stream", "state", "queue")}
    for name, close in silent.items():
        store = engine.module(name).store  # type: ignore[attr-defined]
        monkeypatch.setattr(store, "close" if name == "queue" else "aclose", close)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="iii_engine.closing"):
        await asyncio.wait_for(engine.stop(), 20)
    took = loop.time() - began
    await asyncio.sleep(0)  # the cancels of the closes let go are delivered on the next turn
    assert took < 2 * BOUND_S, took  # before: about 3 * BOUND_S (one bound per store, one after another)
    for name, close in silent.items():
        assert close.started is not None and close.cancelled is not None, name
        assert f"the {name} module's store" in caplog.text
    # side by side: every close had started before any was given up
    assert max(c.started for c in silent.values() if c.started is not None) < min(
        c.cancelled for c in silent.values() if c.cancelled is not None)


async def test_a_healthy_sqlite_store_next_to_a_silent_one_closes_fully(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", BOUND_S)
    url = f"sqlite+aiosqlite:///{tmp_path / 'streams.db'}"
    engine = Engine(config=engine_config(store_url=url))
    await engine.start()
    silent = _SilentClose()
    # the queue module stops (and closes its store) first: its silent close is under way when the stream
    # module's SQLite store closes, and must not take that close's time
    monkeypatch.setattr(engine.module("queue").store, "close", silent)  # type: ignore[attr-defined]
    store = engine.module("stream").store  # type: ignore[attr-defined]
    assert isinstance(store, SQLStream)
    writes = [asyncio.create_task(store.set(StreamSetInput(stream_name="s", group_id="g", item_id=f"i{n}", data=n)))
              for n in range(300)]
    await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)  # group commits under way, more queued
    with caplog.at_level(logging.WARNING, logger="iii_engine.closing"):
        await asyncio.wait_for(engine.stop(), 20)
    assert silent.cancelled is not None
    assert "the queue module's store" in caplog.text
    assert "the stream module's store" not in caplog.text  # closed in time, not let go
    acknowledged = []
    for n, write in enumerate(writes):
        assert write.done()
        if write.exception() is None:
            acknowledged.append(n)
        else:  # refused before it ran; never one cut off mid-commit ("closed while a write was in flight")
            assert isinstance(write.exception(), StreamClosedError)
            assert "before the write ran" in str(write.exception())
    assert acknowledged
    async with SQLStream.from_url(url) as reopened:
        for n in acknowledged:
            assert await reopened.get(StreamGetInput(stream_name="s", group_id="g", item_id=f"i{n}")) == n


async def test_a_store_close_that_fails_is_logged_naming_it_and_the_others_still_close(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", BOUND_S)
    engine = Engine(config=engine_config())
    await engine.start()
    state_store = engine.module("state").store  # type: ignore[attr-defined]
    stream_store = engine.module("stream").store  # type: ignore[attr-defined]
    real_close = stream_store.aclose
    stream_closed = asyncio.Event()

    async def broken_close() -> None:
        raise RuntimeError("the disk is gone")

    async def tracked_close() -> None:
        await real_close()
        stream_closed.set()

    monkeypatch.setattr(state_store, "aclose", broken_close)
    monkeypatch.setattr(stream_store, "aclose", tracked_close)
    with caplog.at_level(logging.ERROR, logger="iii_engine.closing"):
        await asyncio.wait_for(engine.stop(), 20)
    assert stream_closed.is_set()
    # before: "module state failed to stop", the store unnamed
    assert "the state module's store (MemoryStream) failed to close: RuntimeError('the disk is gone')" in caplog.text


async def test_a_stop_cancelled_between_modules_lets_the_closes_under_way_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    silent = _SilentClose()
    monkeypatch.setattr(engine.module("queue").store, "close", silent)  # type: ignore[attr-defined]
    state_stopping = asyncio.Event()

    async def stuck_stop() -> None:  # the state module stops after the queue module, whose close is under way
        state_stopping.set()
        await asyncio.get_running_loop().create_future()

    monkeypatch.setattr(engine.module("state"), "stop", stuck_stop)
    before = let_go_count()
    stop = asyncio.create_task(engine.stop())
    await asyncio.wait_for(state_stopping.wait(), 5)
    assert silent.started is not None and silent.cancelled is None
    # the stop's own task (a cancel of its caller no longer cancels the stop): as asyncio.run's end cancels every
    # task left
    assert engine._stop_task is not None
    engine._stop_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    await asyncio.sleep(0)  # the close's cancel is delivered on the next turn
    assert silent.cancelled is not None  # not left running unreferenced
    assert let_go_count() == before
    await engine._listener.close()  # the rest of the cancelled stop: the worker port
