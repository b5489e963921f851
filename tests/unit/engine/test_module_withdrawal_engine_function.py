"""A module that removes a function (its ``services.unregister_function``) of an id the engine itself registered
(``Engine.register_function``) removes it while it runs only: the engine's comes back at the module's stop, as it
does after a module that only registered over it.

Before: the module's removal dropped the engine's function for good (it was no longer kept across stops), so after
the module's stop the id was gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine import engine as engine_module
from iii_engine.modules.base import BuiltinFunction, EngineModule, InvocationContext
from iii_engine.modules.catalogue import resolve
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.timeout(30)

_CLASS = "modules::withdrawer::WithdrawerModule"
_ID = "x::f"


async def _engines(data: Any, ctx: InvocationContext) -> Any:
    return "engine's"


async def _modules(data: Any, ctx: InvocationContext) -> Any:
    return "module's"


class _Withdrawer(EngineModule):
    """Its start registers its own :data:`_ID` over the engine's (``register``), then removes :data:`_ID`."""

    name: ClassVar[str] = "withdrawer"
    class_names: ClassVar[tuple[str, ...]] = (_CLASS,)
    register: ClassVar[bool] = True

    async def start(self) -> None:
        if type(self).register:
            self.services.register_function(BuiltinFunction(_ID, _modules))
        self.services.unregister_function(_ID)


def _resolve(name: str) -> type[EngineModule]:
    return _Withdrawer if name == _CLASS else resolve(name)


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    """An engine with the withdrawer module and an engine-level :data:`_ID`, not started; stopped at the end."""
    monkeypatch.setattr(engine_module, "resolve", _resolve)
    monkeypatch.setattr(_Withdrawer, "register", True)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(_CLASS)]))
    engine.register_function(BuiltinFunction(_ID, _engines))
    try:
        yield engine
    finally:
        await engine.stop()


@pytest.mark.parametrize("register", [True, False], ids=["its own over the engine's", "the engine's"])
async def test_the_engine_level_function_comes_back_at_the_stop_of_a_module_that_removed_it(
        engine: Engine, register: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Withdrawer, "register", register)
    for _ in range(2):  # the next run's module removes it again, and it comes back again
        await engine.start()
        assert not engine.has_function(_ID)  # removed while the module runs
        await engine.stop()
        assert engine.has_function(_ID)  # before: False, gone for good
        assert await engine.invoke(_ID, {}) == "engine's"


async def test_the_engine_level_function_comes_back_after_a_worker_that_registered_it_after_the_removal(
        engine: Engine) -> None:
    await engine.start()
    worker = await RawWorker.connect(engine.url)
    await worker.register(_ID)
    await worker.sync()
    assert engine.registry.functions[_ID].owner == worker.worker_id
    await engine.stop()  # the module stops first: the worker's registration is current, the engine's restored after it
    assert await asyncio.wait_for(engine.invoke(_ID, {}), 5) == "engine's"  # before: function_not_found


async def test_an_engine_level_function_unregistered_on_the_engine_stays_gone(engine: Engine) -> None:
    await engine.start()
    engine.unregister_function(_ID)  # the engine's own removal: no longer kept, the module's stop brings back nothing
    await engine.stop()
    assert not engine.has_function(_ID)
