"""Every module start and stop the engine awaits has a bound.

* A module whose stop hangs (a silent server, a handler that ignores its cancel): before, ``Engine.stop()`` waited
  for it for good, and the other modules' stops and the store closes never came. Now it gets
  ``MODULE_STOP_TIMEOUT_S`` (plus what its settings give its stop, ``*stop_timeout_ms``), then is cancelled, given
  ``CLOSE_TIMEOUT_S``, and let go with one warning naming it and where it waited; the engine's stop goes on.
* A worker connection whose frame is still being handled when the stop closes the worker port (a stopped module's
  trigger type whose ``register`` never answers): before, the port's close waited for that handler for good. Now the
  handlers still running ``2 x CLOSE_TIMEOUT_S`` into the close are cancelled, and the close is let go past
  ``CLOSE_TIMEOUT_S`` more.
* A module whose start hangs (a store whose open never answers) with no stop asked: before, ``Engine.start()``
  waited for good, a half-started engine saying nothing. Now it gets ``MODULE_START_TIMEOUT_S`` (or its entry's
  ``start_timeout_ms``, or what the module states), then the start fails with one line naming the module, its class
  and the bound, and everything started before is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import pytest
import websockets

from iii.iii_types import TriggerInfo
from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, ModuleSpec, closing
from iii_engine import engine as engine_module
from iii_engine.closing import close_store
from iii_engine.modules.base import (
    BuiltinFunction,
    EngineModule,
    EngineServices,
    InvocationContext,
    ModuleStartError,
)
from iii_engine.modules.catalogue import resolve
from iii_engine.settings import Settings
from iii_streams.deadlines import let_go_count
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

_STUCK = "modules::stuck::StuckModule"
_RECORDER = "modules::recorder::RecorderModule"


class _StuckSettings(Settings):
    stop_timeout_ms: int = 0


class _Stuck(EngineModule):
    """Its start or its stop waits for ``go`` (never set unless the test sets it); ``stubborn``: that wait swallows
    its cancel too (its library's doing). Registers ``stuck::f`` at its start."""

    name: ClassVar[str] = "stuck"
    class_names: ClassVar[tuple[str, ...]] = (_STUCK,)
    hang_start: ClassVar[bool] = False
    hang_stop: ClassVar[bool] = False
    stubborn: ClassVar[bool] = False
    longer_start_s: ClassVar[float | None] = None
    go: ClassVar[asyncio.Event]
    stop_ended: ClassVar[asyncio.Event]
    registering: ClassVar[asyncio.Event]

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = _StuckSettings.parse(self.config)

    async def _wait(self) -> None:
        go = type(self).go
        while not go.is_set():
            try:
                await go.wait()
            except asyncio.CancelledError:
                if not type(self).stubborn:
                    raise

    async def start(self) -> None:
        self.services.register_function(BuiltinFunction("stuck::f", _echo))
        self.services.register_trigger_type("stuck", "its register waits for go", self)
        if type(self).hang_start:
            await self._wait()

    async def stop(self) -> None:
        try:
            if type(self).hang_stop:
                await self._wait()
        finally:
            type(self).stop_ended.set()

    async def register(self, trigger: TriggerInfo) -> None:
        type(self).registering.set()
        await self._wait()

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Nothing to deactivate."""

    def start_timeout_s(self) -> float:
        longer = type(self).longer_start_s
        return longer if longer is not None else super().start_timeout_s()


class _Recorder(EngineModule):
    """Started before ``stuck``, so stopped after it; its stop hands a store close to the engine's stop."""

    name: ClassVar[str] = "recorder"
    class_names: ClassVar[tuple[str, ...]] = (_RECORDER,)
    stopped: ClassVar[int] = 0
    store_closed: ClassVar[int] = 0

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        type(self).stopped += 1
        await close_store(self._close(), "the recorder's store")

    @staticmethod
    async def _close() -> None:
        _Recorder.store_closed += 1


async def _echo(data: object, ctx: InvocationContext) -> object:
    return data


def _resolve(name: str) -> type[EngineModule]:
    return {_STUCK: _Stuck, _RECORDER: _Recorder}.get(name) or resolve(name)


@pytest.fixture(autouse=True)
async def _modules(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Both test modules configurable, reset; small bounds (each test's own stays under 2 s). At the end the
    starts and stops let go end (on the test's loop)."""
    monkeypatch.setattr(engine_module, "resolve", _resolve)
    monkeypatch.setattr(closing, "MODULE_STOP_TIMEOUT_S", 0.2)
    monkeypatch.setattr(closing, "MODULE_START_TIMEOUT_S", 0.2)
    monkeypatch.setattr(closing, "CLOSE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(closing, "MODULE_START_WAIT_S", 0.2)
    _Stuck.hang_start = _Stuck.hang_stop = _Stuck.stubborn = False
    _Stuck.longer_start_s = None
    _Stuck.go, _Stuck.stop_ended, _Stuck.registering = asyncio.Event(), asyncio.Event(), asyncio.Event()
    _Recorder.stopped = _Recorder.store_closed = 0
    yield
    _Stuck.go.set()
    await until(lambda: let_go_count() == 0, 5)


def _engine(stuck: ModuleSpec | None = None) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                      modules=[ModuleSpec(_RECORDER), stuck or ModuleSpec(_STUCK)]))


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.mark.parametrize("stubborn", [False, True])
async def test_a_hung_module_stop_is_let_go_and_the_stop_goes_on(caplog: pytest.LogCaptureFixture,
                                                                 stubborn: bool) -> None:
    _Stuck.stubborn = stubborn
    engine = _engine()
    await engine.start()
    _Stuck.hang_stop = True
    with caplog.at_level(logging.WARNING, logger="iii_engine"):
        async with asyncio.timeout(1.5):  # before: the stop waited for good (TimeoutError here)
            await engine.stop()
    assert _Recorder.stopped == 1 and _Recorder.store_closed == 1  # the next module's stop and its store close
    assert not engine.has_function("stuck::f")  # the hung module's registrations are undone all the same
    assert not engine.ready.is_set()
    [warning] = _warnings(caplog, "module stuck's stop")
    assert "did not end within 0.2 s" in warning and "_Stuck._wait" in warning  # its bound, where it waited
    assert ("still running 0.2 s after it: let go" if stubborn else "it ended after the cancel") in warning
    assert _Stuck.stop_ended.is_set() is not stubborn
    _Stuck.go.set()
    await asyncio.wait_for(_Stuck.stop_ended.wait(), 1)  # the let-go stop still ends once its wait does


async def test_a_stop_the_module_s_settings_give_time_is_not_cut(caplog: pytest.LogCaptureFixture) -> None:
    # its settings' stop_timeout_ms (as the queue module's) adds to MODULE_STOP_TIMEOUT_S
    engine = _engine(ModuleSpec(_STUCK, {"stop_timeout_ms": 1000}))
    await engine.start()
    _Stuck.hang_stop = True
    asyncio.get_running_loop().call_later(0.5, _Stuck.go.set)  # a stop that takes 0.5 s (> 0.2 s, < 1.2 s)
    with caplog.at_level(logging.WARNING, logger="iii_engine"):
        async with asyncio.timeout(2):
            await engine.stop()
    assert _Stuck.stop_ended.is_set() and _Recorder.stopped == 1
    assert _warnings(caplog, "stop") == []


async def test_a_hung_module_start_fails_the_start_within_its_bound() -> None:
    _Stuck.hang_start = True
    engine = _engine()
    async with asyncio.timeout(1.5):  # before: the start waited for good (TimeoutError here)
        with pytest.raises(ModuleStartError) as failure:
            await engine.start()
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"module {_STUCK} cannot start: its start (module stuck) did not end within 0.2 s")
    assert "start_timeout_ms" in message
    assert _Recorder.stopped == 1 and _Recorder.store_closed == 1  # what started before is stopped
    assert _Stuck.stop_ended.is_set()  # the timed-out module is asked to let go of what it holds
    assert engine.modules == {} and not engine.has_function("stuck::f") and not engine.ready.is_set()
    await engine.stop()  # nothing left to stop


async def test_a_hung_start_and_a_hung_stop_after_it_are_both_bounded() -> None:
    _Stuck.hang_start = _Stuck.hang_stop = True
    _Stuck.stubborn = True  # neither the start nor the stop after it ends at its cancel
    engine = _engine()
    async with asyncio.timeout(1.8):
        with pytest.raises(ModuleStartError, match=r"did not end within 0\.2 s"):
            await engine.start()
    assert _Recorder.stopped == 1 and engine.modules == {}


async def test_the_entry_s_start_timeout_ms_bounds_the_start() -> None:
    _Stuck.hang_start = True
    _Stuck.longer_start_s = 60.0  # what the module states: the entry's setting wins
    engine = _engine(ModuleSpec.parse({"class": _STUCK, "start_timeout_ms": 300}))
    async with asyncio.timeout(1.5):
        with pytest.raises(ModuleStartError, match=r"\(module stuck\) did not end within 0\.3 s"):
            await engine.start()


async def test_a_module_stating_a_longer_start_is_not_cut() -> None:
    _Stuck.hang_start = True
    _Stuck.longer_start_s = 2.0
    asyncio.get_running_loop().call_later(0.5, _Stuck.go.set)  # a start that takes 0.5 s (> 0.2 s, < 2 s)
    engine = _engine()
    async with asyncio.timeout(1.5):
        await engine.start()
    try:
        assert engine.ready.is_set() and engine.has_function("stuck::f")
    finally:
        await engine.stop()


async def test_allow_degraded_leaves_a_hung_module_out() -> None:
    _Stuck.hang_start = True
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, allow_degraded=True,
                                        modules=[ModuleSpec(_RECORDER), ModuleSpec(_STUCK)]))
    async with asyncio.timeout(1.5):
        await engine.start()
    try:
        assert engine.ready.is_set() and "did not end within 0.2 s" in engine.unavailable_modules[_STUCK]
        assert not engine.has_function("stuck::f") and engine.module("recorder") is not None
    finally:
        with contextlib.suppress(Exception):
            await engine.stop()


async def test_a_worker_frame_still_handled_does_not_hold_the_port_s_close(caplog: pytest.LogCaptureFixture) -> None:
    engine = _engine()
    await engine.start()
    async with websockets.connect(engine.url) as worker:
        assert loads(await worker.recv())["type"] == "workerregistered"
        await worker.send(dumps({"type": "registertrigger", "id": "t1", "trigger_type": "stuck", "function_id": "f",
                                 "config": {}}))
        await asyncio.wait_for(_Stuck.registering.wait(), 5)  # its handler now waits on the module for good
        with caplog.at_level(logging.WARNING, logger="iii_engine"):
            async with asyncio.timeout(1.5):  # before: the port's close waited for the handler for good
                await engine.stop()
    [warning] = _warnings(caplog, "still handling a frame")
    assert warning.startswith("1 worker connection(s) still handling a frame 0.4 s into the worker port's close")
    assert "_Stuck._wait" in warning
    assert engine.workers == {}  # the cancelled handler's cleanup ran
