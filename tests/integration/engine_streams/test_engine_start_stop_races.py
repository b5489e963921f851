"""``Engine.start()`` against a stop under way, an unfinished (cancelled) stop, a start under way, and a module
whose start hangs.

* ``start()`` while a stop is under way: before, the start went ahead on top of the stop, which then closed the
  worker port the start had just bound: ``ready`` set, nothing listening.
* ``start()`` after a stop whose caller was cancelled (the stop goes on): before, the old worker port (and the modules
  the stop, then cancelled with its caller, had not reached) were forgotten, never closed: the port kept accepting
  after the next stop too. Now the start waits for that stop.
* ``start()`` while a start is under way: before, it returned at once, the engine not accepting workers yet (and
  returned normally even when that start failed).
* ``stop()`` while a module's start hangs (a store that never answers its open): before, the stop waited for good;
  now the module start gets ``MODULE_START_WAIT_S``, then is cancelled.
* ``stop()`` while a worker's call of a built-in function runs that swallows its cancel (its library): before, the
  stop waited for it for good, its own cancel too; now the calls in flight get ``CLOSE_TIMEOUT_S`` after their cancel.
* ``start()`` again after a stop, a module left out (``allow_degraded``) this time: before, ``engine.module()``
  handed out the previous run's stopped module, and the next stop stopped it a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine, EngineConfig, EngineStartError, ModuleSpec, closing
from iii_engine.modules.base import BuiltinFunction, ModuleStartError
from iii_engine.modules.state.module import StateModule

from .helpers import Worker, engine_config

pytestmark = pytest.mark.timeout(30)


async def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on loopback ``port``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def _hold_state_stop(engine: Engine) -> tuple[asyncio.Event, asyncio.Event]:
    """The state module's stop holds (after the modules before it stopped) until the second event is set; the
    first is set once it holds."""
    state = engine.module("state")
    assert state is not None
    real_stop = state.stop
    holding, release = asyncio.Event(), asyncio.Event()

    async def held_stop() -> None:
        holding.set()
        await release.wait()
        await real_stop()

    state.stop = held_stop  # type: ignore[method-assign]
    return holding, release


def _track_stream_stop(engine: Engine) -> asyncio.Event:
    """An event set once the stream module's stop ended (the state module stops just before it)."""
    stream = engine.module("stream")
    assert stream is not None
    real_stop, stopped = stream.stop, asyncio.Event()

    async def tracked_stop() -> None:
        await real_stop()
        stopped.set()

    stream.stop = tracked_stop  # type: ignore[method-assign]
    return stopped


async def test_a_start_during_a_stop_starts_once_the_stop_ended() -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    holding, release = _hold_state_stop(engine)
    stop = asyncio.create_task(engine.stop())
    await asyncio.wait_for(holding.wait(), 10)
    start = asyncio.create_task(engine.start())
    done, _ = await asyncio.wait({start}, timeout=0.2)  # a wait for something that must NOT happen
    assert not done, "the start returned while the stop was still under way"
    release.set()
    await asyncio.wait_for(stop, 20)
    await asyncio.wait_for(start, 20)
    try:
        assert engine.ready.is_set()
        worker = await asyncio.wait_for(Worker.connect(engine.url), 10)  # before: the stop closed the new port
        await worker.ws.close()
    finally:
        await asyncio.wait_for(engine.stop(), 20)


async def test_a_start_after_a_stop_whose_caller_was_cancelled_lets_that_stop_end_first() -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    old_port = engine.port
    stream_stopped = _track_stream_stop(engine)
    holding, release = _hold_state_stop(engine)  # stopped before the stream module (reverse order)
    stop = asyncio.create_task(engine.stop())
    await asyncio.wait_for(holding.wait(), 10)
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    release.set()
    await asyncio.wait_for(engine.start(), 20)
    try:
        assert stream_stopped.is_set()  # the module the stop had not reached at its caller's cancel
        assert not await _accepts(old_port)  # before: the old worker port, forgotten, accepted for good
        assert engine.port != old_port and await _accepts(engine.port)
    finally:
        await asyncio.wait_for(engine.stop(), 20)
    assert not await _accepts(old_port)


async def test_a_second_start_returns_once_the_engine_accepts_workers() -> None:
    engine = Engine(config=engine_config())
    first = asyncio.create_task(engine.start())
    await asyncio.sleep(0)  # the first start is under way
    try:
        await asyncio.wait_for(engine.start(), 20)
        assert engine.ready.is_set()  # before: returned at once, nothing accepting yet
        await asyncio.wait_for(first, 20)
    finally:
        await asyncio.wait_for(engine.stop(), 20)


async def test_a_second_start_fails_with_the_start_under_way() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        engine = Engine(config=EngineConfig(host="127.0.0.1", port=taken.getsockname()[1], modules=[]))
        first = asyncio.create_task(engine.start())
        await asyncio.sleep(0)
        with pytest.raises(EngineStartError):  # before: returned normally, the engine never started
            await asyncio.wait_for(engine.start(), 20)
        with pytest.raises(EngineStartError, match="cannot listen"):
            await first


async def test_a_stop_while_a_module_start_hangs_ends_the_start(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "MODULE_START_WAIT_S", 0.3)
    entered, cancelled, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def hung_start(self: StateModule) -> None:  # a store open that never gets an answer
        entered.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def tracked_stop(self: StateModule) -> None:
        stopped.set()

    monkeypatch.setattr(StateModule, "start", hung_start)
    monkeypatch.setattr(StateModule, "stop", tracked_stop)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                        modules=[ModuleSpec("modules::state::StateModule", {})]))
    start = asyncio.create_task(engine.start())
    await asyncio.wait_for(entered.wait(), 10)
    port = engine.port
    with caplog.at_level(logging.WARNING, logger="iii_engine.engine"):
        await asyncio.wait_for(engine.stop(), 10)  # before: waited for the hung start for good
    assert "module state did not start within 0.3 s of the engine's stop; its start is cancelled" in caplog.text
    with pytest.raises(EngineStartError, match="stopped during its start"):
        await asyncio.wait_for(start, 10)
    assert cancelled.is_set() and stopped.is_set()  # the module's start was ended and its stop called
    assert not await _accepts(port)
    assert not engine.modules


async def test_a_stop_while_a_module_start_swallows_its_cancel_lets_it_go(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "MODULE_START_WAIT_S", 0.3)
    entered, release = asyncio.Event(), asyncio.Event()

    async def stubborn_start(self: StateModule) -> None:  # its library swallows the cancel
        entered.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    monkeypatch.setattr(StateModule, "start", stubborn_start)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                        modules=[ModuleSpec("modules::state::StateModule", {})]))
    start = asyncio.create_task(engine.start())
    await asyncio.wait_for(entered.wait(), 10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(engine.stop(), 10)  # before the bound on its end: waited for good
            with pytest.raises(EngineStartError, match="stopped during its start"):
                await asyncio.wait_for(start, 10)
        assert loop.time() - began < 2, loop.time() - began  # two bounds of 0.3 s
        assert "module state's start did not end within 0.3 s; cancelled and let go" in caplog.text
    finally:
        release.set()  # the start let go ends


async def test_a_restart_forgets_the_modules_of_the_previous_run(monkeypatch: pytest.MonkeyPatch) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, allow_degraded=True,
                          modules=[ModuleSpec("modules::state::StateModule", {})])
    engine = Engine(config=config)
    await engine.start()
    await engine.stop()
    stops = 0
    real_stop = StateModule.stop

    async def failing_start(self: StateModule) -> None:
        raise RuntimeError("the store is gone")

    async def counted_stop(self: StateModule) -> None:
        nonlocal stops
        stops += 1
        await real_stop(self)

    monkeypatch.setattr(StateModule, "start", failing_start)
    monkeypatch.setattr(StateModule, "stop", counted_stop)
    await engine.start()  # degraded: the state module is left out this time
    try:
        assert "modules::state::StateModule" in engine.unavailable_modules
        assert engine.module("state") is None  # before: the previous run's stopped module
        # before: its functions and trigger type too, answering from a closed store instead of function_not_found
        assert not engine.has_function("state::get") and "state" not in engine.registry.trigger_types
    finally:
        await engine.stop()
    assert stops == 1  # its stop after its failed start; before: the old one was stopped a second time too


async def test_a_stop_with_a_call_in_flight_that_swallows_its_cancel_ends_in_bounds(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    entered, release = asyncio.Event(), asyncio.Event()

    async def stubborn(data: Any, context: Any) -> None:  # a built-in whose library swallows the cancel
        entered.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    engine.register_function(BuiltinFunction("test::stubborn", stubborn, "never ends"))
    worker = await asyncio.wait_for(Worker.connect(engine.url), 10)
    call = asyncio.create_task(worker.call("test::stubborn"))
    await asyncio.wait_for(entered.wait(), 10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        with caplog.at_level(logging.WARNING, logger="iii_engine.engine"):
            await asyncio.wait_for(engine.stop(), 10)  # before: held for good (its cancel too)
        assert loop.time() - began < closing.CLOSE_TIMEOUT_S + 2, loop.time() - began
        assert f"the calls in flight did not end within {closing.CLOSE_TIMEOUT_S:g} s" in caplog.text
        with pytest.raises((ConnectionClosed, TimeoutError)):  # the caller's connection is closed: not answered
            await call
    finally:
        release.set()


async def test_a_stop_called_while_a_start_waits_for_a_stop_ends_that_start() -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    holding, release = _hold_state_stop(engine)
    first_stop = asyncio.create_task(engine.stop())
    await asyncio.wait_for(holding.wait(), 10)
    start = asyncio.create_task(engine.start())  # waits for the first stop
    await asyncio.sleep(0)
    second_stop = asyncio.create_task(engine.stop())  # called after the start: the engine ends stopped
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(first_stop, 20)
    await asyncio.wait_for(second_stop, 20)
    # before: the second stop returned with the first, before the start began: the engine then ran on
    with pytest.raises(EngineStartError, match="stopped during its start"):
        await asyncio.wait_for(start, 20)
    assert not engine.ready.is_set() and not engine.modules


async def test_a_module_stop_raising_cancelled_error_does_not_end_the_stop() -> None:
    engine = Engine(config=engine_config())
    await engine.start()
    port = engine.port
    stream_stopped = _track_stream_stop(engine)

    async def cancelled_stop() -> None:  # awaits a task of its own it cancelled, without catching the cancel
        task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
        task.cancel()
        await task

    engine.module("state").stop = cancelled_stop  # type: ignore[method-assign, union-attr]
    await asyncio.wait_for(engine.stop(), 20)  # before: raised CancelledError, the stop ended there
    assert stream_stopped.is_set()  # stopped after the state module
    assert not await _accepts(port)


async def test_a_module_start_raising_cancelled_error_is_a_start_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def cancelled_start(self: StateModule) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
        task.cancel()
        await task

    monkeypatch.setattr(StateModule, "start", cancelled_start)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                        modules=[ModuleSpec("modules::state::StateModule", {})]))
    # before: CancelledError out of start() (the CLI died with a traceback instead of its one-line error)
    with pytest.raises(ModuleStartError, match="modules::state::StateModule"):
        await asyncio.wait_for(engine.start(), 20)
    assert not engine.modules


async def test_a_restarted_engine_tells_of_each_worker_once() -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    await engine.stop()
    await engine.start()  # its worker module listens for workers again; the previous run's must not
    try:
        watcher = await asyncio.wait_for(Worker.connect(engine.url), 10)
        seen: list[tuple[str, str]] = []
        changed = asyncio.Condition()

        async def record(payload: dict[str, str]) -> None:
            async with changed:
                seen.append((payload["event"], payload["worker_id"]))
                changed.notify_all()

        async def told_of(event: str, worker: Worker) -> None:
            async with changed:
                await asyncio.wait_for(changed.wait_for(lambda: (event, worker.worker_id) in seen), 10)

        await watcher.register("test::workers", record)
        await watcher.trigger("engine::workers-available", "test::workers", {})
        await watcher.call("engine::workers::list")  # answered after the frames before it: the trigger is in
        first = await asyncio.wait_for(Worker.connect(engine.url), 10)
        await first.close()
        await told_of("worker_disconnected", first)
        marker = await asyncio.wait_for(Worker.connect(engine.url), 10)
        # the calls are fired in order: once the marker's is in, any copy of the first worker's events is too
        await told_of("worker_connected", marker)
        told = [event for event, worker_id in seen if worker_id == first.worker_id]
        assert told == ["worker_connected", "worker_disconnected"]  # before: each twice (both runs' modules)
        await marker.close()
    finally:
        await asyncio.wait_for(engine.stop(), 20)


async def test_a_start_cancelled_while_a_left_out_modules_store_closes_stops_the_engine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The start waits for the store closes of the modules ``allow_degraded`` left out after the engine is ready: a
    cancel there stops the engine (before: ``start()`` raised CancelledError, the worker port accepting for good)."""
    closing_began, never = asyncio.Event(), asyncio.Event()

    async def held_close() -> None:
        closing_began.set()
        await never.wait()

    async def failing_start(self: StateModule) -> None:
        await closing.close_store(held_close(), "a left-out module's store")  # handed to the start's closes
        raise RuntimeError("the store is gone")

    monkeypatch.setattr(StateModule, "start", failing_start)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, allow_degraded=True,
                                        modules=[ModuleSpec("modules::state::StateModule", {})]))
    start = asyncio.create_task(engine.start())
    try:
        await asyncio.wait_for(closing_began.wait(), 5)
        await asyncio.wait_for(engine.ready.wait(), 5)
        port = engine.port
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(start, 5)
        assert not engine.ready.is_set()
        assert not await _accepts(port)  # before: the cancelled start's engine went on accepting workers
    finally:
        await engine.stop()
