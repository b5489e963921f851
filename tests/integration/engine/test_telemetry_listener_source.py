"""A telemetry listener is told which worker connection sent each frame, so the observability module can give each
sender its share of its ingest queue (one worker's flood left another's log records 39 of 100 kept, 99 now).

Listeners are each called in a guard (one raising leaves the others told and a worker's cleanup whole), and one of
a shape the engine cannot call is refused when added."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from polling import until

from iii_engine import Engine
from iii_engine.engine import UNDECODABLE_LOG_BURST

from .raw import RawWorker, disconnect

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: telemetry listeners")]


async def test_each_frame_comes_with_its_worker_id(engine: Engine) -> None:
    got: list[tuple[str, bytes, str]] = []
    engine.add_telemetry_listener(lambda kind, body, source: got.append((kind, body, source)))
    first = await RawWorker.connect(engine.url)
    second = await RawWorker.connect(engine.url)
    try:
        await first.ws.send(b"LOGS" + b'{"resourceLogs": []}')
        await second.ws.send(b"MTRC" + b'{"resourceMetrics": []}')
        await until(lambda: len(got) == 2)
        assert sorted(got) == [("LOGS", b'{"resourceLogs": []}', first.worker_id),
                               ("MTRC", b'{"resourceMetrics": []}', second.worker_id)]
    finally:
        await first.close()
        await second.close()


async def test_a_listener_of_kind_and_body_is_called_so(engine: Engine) -> None:
    """As listeners were written before the worker's id was passed: given three arguments, one failed on every
    frame (a TypeError logged with its traceback per frame)."""
    got: list[tuple[str, bytes]] = []
    engine.add_telemetry_listener(lambda kind, body: got.append((kind, body)))
    worker = await RawWorker.connect(engine.url)
    try:
        await worker.ws.send(b"LOGS" + b'{"resourceLogs": []}')
        await until(lambda: len(got) == 1)
        assert got == [("LOGS", b'{"resourceLogs": []}')]
    finally:
        await worker.close()


async def test_a_listener_that_raises_leaves_the_others_served_and_logs_a_burst(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """(before: the first listener to raise ended the loop: the ones after it never saw a frame, and each frame
    wrote a traceback.)"""
    def broken(kind: str, body: bytes, source: str) -> None:
        raise RuntimeError("listener bug")

    got: list[str] = []
    engine.add_telemetry_listener(broken)
    engine.add_telemetry_listener(lambda kind, body, source: got.append(kind))
    worker = await RawWorker.connect(engine.url)
    try:
        for _ in range(100):
            await worker.ws.send(b"LOGS" + b'{"resourceLogs": []}')
        await until(lambda: len(got) == 100)
    finally:
        await worker.close()
    lines = [r for r in caplog.records if "telemetry listener" in r.getMessage() and "broken" in r.getMessage()]
    tracebacks = [r for r in lines if r.exc_info is not None]
    assert len(tracebacks) == UNDECODABLE_LOG_BURST and "listener bug" in (tracebacks[0].exc_text or "")
    assert len(lines) <= UNDECODABLE_LOG_BURST + 1  # then one line counting the rest (100 before)


async def test_a_functions_listener_that_raises_does_not_cut_a_workers_cleanup_short(engine: Engine) -> None:
    """(before: a functions listener raising in the middle of a leaving worker's cleanup left the rest of it
    undone: the worker stayed listed, its calls in flight were not ended.)"""
    def broken() -> None:
        raise RuntimeError("listener bug")

    worker = await RawWorker.connect(engine.url)
    await worker.register("leaving::fn")
    await worker.sync()
    engine.add_functions_listener(broken)
    await disconnect(engine, worker)
    assert worker.worker_id not in engine.workers
    assert "leaving::fn" not in engine.registry.functions


@pytest.mark.parametrize("listener", [lambda body: None, lambda: None, "async"], ids=["one argument", "none", "async"])
def test_a_listener_of_another_shape_is_refused_when_added(engine: Engine, listener: Any) -> None:
    """(before: accepted, then it failed on every frame; an async one's coroutine was never awaited.)"""
    if listener == "async":
        async def listener(kind: str, body: bytes, source: str) -> None:
            return None
    with pytest.raises(TypeError, match=r"telemetry listener .*(takes neither|is async)"):
        engine.add_telemetry_listener(listener)


async def test_a_listener_raising_cancelled_error_of_its_own_does_not_cut_a_cleanup_short(engine: Engine) -> None:
    """A listener reading a cancelled future raises CancelledError, a BaseException: the guard let it through, and
    a leaving worker stayed listed for good (no worker_disconnected, nothing logged)."""
    cancelled = asyncio.get_running_loop().create_future()
    cancelled.cancel()
    worker = await RawWorker.connect(engine.url)
    await worker.register("leaving::fn")
    await worker.sync()
    engine.add_functions_listener(lambda: cancelled.result())
    await disconnect(engine, worker)
    assert worker.worker_id not in engine.workers
    assert "leaving::fn" not in engine.registry.functions


async def test_a_listener_returning_a_coroutine_is_told_of(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """An async function behind a sync wrapper passes the check when added; what it returns never ran, silently
    (Python's "never awaited" warning shows once per place)."""
    ran: list[str] = []

    async def body(kind: str, source: str) -> None:
        ran.append(kind)

    engine.add_telemetry_listener(lambda kind, body_, source: body(kind, source))
    worker = await RawWorker.connect(engine.url)
    try:
        await worker.ws.send(b"LOGS" + b'{"resourceLogs": []}')
        await worker.sync()
        await until(lambda: any("returned an awaitable" in r.getMessage() for r in caplog.records))
    finally:
        await worker.close()
    assert ran == []
