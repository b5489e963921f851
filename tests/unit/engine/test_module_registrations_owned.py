"""What a module adds to the engine is that module's, whenever and from whichever task it adds it: taken away at the
module's stop, and refused once the module is stopped.

Before: only what the module's start added from the start's own task was taken away (at the end of the engine's
stop). A function registered by a task the start spawned, by one of the module's built-ins while it ran, or by a
start let go after ``MODULE_START_WAIT_S`` stayed registered through the stop and the next start, routed to a
module that was stopped; a module left out by ``allow_degraded`` kept its functions for the whole run; and a module
already stopped could still add functions that nothing took away again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, EngineStartError, ModuleSpec, closing
from iii_engine import engine as engine_module
from iii_engine.modules.base import BuiltinFunction, EngineModule, InvocationContext, ModuleStoppedError
from iii_engine.modules.catalogue import resolve
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

_CLASS = "modules::spawner::SpawnerModule"
_LATE = "spawner::late"


async def _answer(data: Any, ctx: InvocationContext) -> Any:
    return data


class _Spawner(EngineModule):
    """Its start spawns a task that registers :data:`_LATE` and a trigger type once ``go`` is set, and registers
    ``spawner::add``, whose call registers :data:`_LATE`. ``fail``: its start then fails; ``stubborn``: its start
    swallows its cancel until ``go`` is set, then registers :data:`_LATE` itself. ``outcome`` gets what the late
    registration raised (``None``: accepted)."""

    name: ClassVar[str] = "spawner"
    class_names: ClassVar[tuple[str, ...]] = (_CLASS,)
    go: ClassVar[asyncio.Event]
    entered: ClassVar[asyncio.Event]
    outcome: ClassVar[asyncio.Future[BaseException | None]]
    fail: ClassVar[bool] = False
    stubborn: ClassVar[bool] = False
    tasks: ClassVar[list[asyncio.Task[None]]] = []

    @classmethod
    def reset(cls, *, fail: bool = False, stubborn: bool = False) -> None:
        cls.go, cls.entered = asyncio.Event(), asyncio.Event()
        cls.outcome = asyncio.get_running_loop().create_future()
        cls.fail, cls.stubborn = fail, stubborn

    def _register_late(self) -> None:
        try:
            self.services.register_function(BuiltinFunction(_LATE, _answer, "registered late"))
            self.services.register_trigger_type("spawner", "registered late", _NoTriggers())
        except Exception as exc:
            type(self).outcome.set_result(exc)
            return
        type(self).outcome.set_result(None)

    async def _later(self) -> None:
        await type(self).go.wait()
        self._register_late()

    async def _add(self, data: Any, ctx: InvocationContext) -> Any:
        self._register_late()
        return True

    async def start(self) -> None:
        cls = type(self)
        cls.entered.set()
        if cls.stubborn:  # its library swallows the cancel
            while not cls.go.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await cls.go.wait()
            self._register_late()
            return
        self.services.register_function(BuiltinFunction("spawner::add", self._add, "registers spawner::late"))
        cls.tasks.append(asyncio.get_running_loop().create_task(self._later()))
        if cls.fail:
            raise ConnectionError("store went away")


class _NoTriggers:
    async def register(self, trigger: Any) -> None:
        """Nothing to activate."""

    async def unregister(self, trigger: Any) -> None:
        """Nothing to deactivate."""


def _resolve(name: str) -> type[EngineModule]:
    return _Spawner if name == _CLASS else resolve(name)


@pytest.fixture
async def spawner(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[type[_Spawner]]:
    """The spawner module, configured as ``modules::spawner::SpawnerModule``; its tasks are ended at the end."""
    monkeypatch.setattr(engine_module, "resolve", _resolve)
    _Spawner.reset()
    _Spawner.tasks = []
    try:
        yield _Spawner
    finally:
        for task in _Spawner.tasks:
            task.cancel()
        await asyncio.gather(*_Spawner.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _running(*, allow_degraded: bool = False) -> AsyncIterator[Engine]:
    """An engine with the spawner module, started; stopped (again) at the end."""
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, allow_degraded=allow_degraded,
                                        modules=[ModuleSpec(_CLASS)]))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def test_what_a_task_of_the_start_registers_goes_at_the_stop(spawner: type[_Spawner]) -> None:
    async with _running() as engine:
        spawner.go.set()
        assert await asyncio.wait_for(spawner.outcome, 5) is None
        assert engine.has_function(_LATE) and "spawner" in engine.registry.trigger_types
        await engine.stop()
        # before: both still there, routed to the stopped module
        assert not engine.has_function(_LATE) and "spawner" not in engine.registry.trigger_types
        spawner.reset()  # the next run's module registers nothing late
        await engine.start()
        assert engine.has_function("spawner::add")
        assert not engine.has_function(_LATE)  # before: the previous run's, through the restart


async def test_what_a_modules_built_in_registers_goes_at_the_stop(spawner: type[_Spawner]) -> None:
    async with _running() as engine:
        assert await engine.invoke("spawner::add", {}) is True  # runs in this test's task, not the start's
        assert engine.has_function(_LATE)
        await engine.stop()
        assert not engine.has_function(_LATE)  # before: kept


async def test_a_stopped_module_may_register_nothing_more(spawner: type[_Spawner]) -> None:
    async with _running() as engine:
        await engine.stop()
        spawner.go.set()  # its task, still running, registers after the module's stop
        refused = await asyncio.wait_for(spawner.outcome, 5)
        assert isinstance(refused, ModuleStoppedError), refused  # before: None, accepted
        assert str(refused) == "module spawner is stopped: its function spawner::late is refused"
        assert not engine.has_function(_LATE)


async def test_a_module_left_out_takes_its_registrations_with_it(spawner: type[_Spawner]) -> None:
    spawner.reset(fail=True)
    async with _running(allow_degraded=True) as engine:
        assert _CLASS in engine.unavailable_modules
        assert not engine.has_function("spawner::add")  # before: registered for the whole run
        spawner.go.set()
        assert isinstance(await asyncio.wait_for(spawner.outcome, 5), ModuleStoppedError)
        assert not engine.has_function(_LATE)


async def test_a_start_let_go_registers_nothing(spawner: type[_Spawner], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closing, "MODULE_START_WAIT_S", 0.1)
    spawner.reset(stubborn=True)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(_CLASS)]))
    starting = asyncio.create_task(engine.start())
    try:
        await asyncio.wait_for(spawner.entered.wait(), 5)
        await asyncio.wait_for(engine.stop(), 5)  # the start is cancelled, swallows it, and is let go
        with pytest.raises(EngineStartError, match="stopped during its start"):
            await asyncio.wait_for(starting, 5)
    finally:
        spawner.go.set()  # the start let go goes on and registers
    assert isinstance(await asyncio.wait_for(spawner.outcome, 5), ModuleStoppedError)  # before: None, accepted
    assert not engine.has_function(_LATE)


async def test_a_stopped_modules_function_a_worker_overwrote_never_comes_back(spawner: type[_Spawner]) -> None:
    async with _running() as engine, websockets.connect(engine.url, compression=None) as worker:
        assert loads(await worker.recv())["type"] == "workerregistered"
        await worker.send(dumps({"type": "registerfunction", "id": "spawner::add"}))
        await until(lambda: engine.registry.functions["spawner::add"].owner is not None)
        await engine.stop()  # the worker's connection is closed after the module's stop
        # before: its disconnect restored the stopped module's built-in it had overwritten
        assert not engine.has_function("spawner::add")


async def test_a_worker_function_a_module_overwrote_comes_back_at_its_release(spawner: type[_Spawner]) -> None:
    async with _running() as engine, websockets.connect(engine.url, compression=None) as worker:
        worker_id = loads(await worker.recv())["worker_id"]
        await worker.send(dumps({"type": "registerfunction", "id": _LATE}))
        await until(lambda: engine.has_function(_LATE))
        spawner.go.set()  # the module's task overwrites it
        assert await asyncio.wait_for(spawner.outcome, 5) is None
        assert engine.registry.functions[_LATE].owner is None
        module = engine.module("spawner")
        assert module is not None
        module.services.release()  # type: ignore[attr-defined]  # what the module's stop does
        assert engine.registry.functions[_LATE].owner == worker_id  # before: gone, the worker's forgotten
