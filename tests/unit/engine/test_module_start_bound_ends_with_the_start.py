"""A module start's bound (``closing.module_start_bound``) holds during the start only: a task the start spawned sees
it while the start runs (a wait inside the start, as ``asyncio.wait_for`` runs in a task of its own), and not once
the start ended, however long that task lives.

Before: every task a start spawned copied the bound with its context for its whole life, so a store such a task
prepared after the start (``_prepare_timeout``) got what was left of the start's bound, down to 0.01 s once the
start's deadline had passed, instead of its own 10 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine import engine as engine_module
from iii_engine.closing import ModuleStartBound, module_start_bound, start_module_task
from iii_engine.modules.base import EngineModule
from iii_engine.modules.catalogue import resolve
from iii_engine.modules.stream import store as store_module

pytestmark = pytest.mark.timeout(30)

_CLASS = "modules::lingerer::LingererModule"


class _Lingerer(EngineModule):
    """Its start reads the bound in a task it awaits, and spawns a task that reads it once ``later`` is set."""

    name: ClassVar[str] = "lingerer"
    class_names: ClassVar[tuple[str, ...]] = (_CLASS,)
    later: ClassVar[asyncio.Event]
    during: ClassVar[asyncio.Future[ModuleStartBound | None]]
    after: ClassVar[asyncio.Future[tuple[ModuleStartBound | None, float]]]
    tasks: ClassVar[list[asyncio.Task[None]]] = []

    @classmethod
    def reset(cls) -> None:
        loop = asyncio.get_running_loop()
        cls.later, cls.during, cls.after = asyncio.Event(), loop.create_future(), loop.create_future()
        cls.tasks = []

    async def _read_during(self) -> None:
        type(self).during.set_result(module_start_bound())

    async def _read_after(self) -> None:
        await type(self).later.wait()
        type(self).after.set_result((module_start_bound(), store_module._prepare_timeout()))

    async def start(self) -> None:
        await asyncio.wait_for(self._read_during(), 5)  # a task of its own, awaited by the start
        type(self).tasks.append(asyncio.get_running_loop().create_task(self._read_after()))


def _resolve(name: str) -> type[EngineModule]:
    return _Lingerer if name == _CLASS else resolve(name)


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    """An engine with the lingerer module, its start bounded by its entry's 30 s; stopped at the end."""
    monkeypatch.setattr(engine_module, "resolve", _resolve)
    _Lingerer.reset()
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec.parse({"class": _CLASS, "start_timeout_ms": 30000})]))
    try:
        yield engine
    finally:
        await engine.stop()
        for task in _Lingerer.tasks:
            task.cancel()
        await asyncio.gather(*_Lingerer.tasks, return_exceptions=True)


async def test_a_task_the_start_spawned_sees_no_bound_once_the_start_ended(engine: Engine) -> None:
    await engine.start()
    during = await asyncio.wait_for(_Lingerer.during, 5)
    assert during is not None and during[:2] == (30.0, True)  # inside the start: its bound
    _Lingerer.later.set()  # the start has ended
    after, prepare = await asyncio.wait_for(_Lingerer.after, 5)
    assert after is None  # before: ModuleStartBound(seconds=30.0, configured=True, ...)
    assert prepare == 10.0  # before: about 29.9, what was left of the start's bound


async def test_a_task_the_start_spawned_sees_the_bound_while_the_start_runs() -> None:
    seen: asyncio.Future[ModuleStartBound | None] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def spawned() -> None:
        seen.set_result(module_start_bound())

    async def start() -> None:
        task = asyncio.get_running_loop().create_task(spawned())  # not awaited by the start: runs while it waits
        await release.wait()
        await task

    starting = start_module_task(start(), 2.0, configured=False)
    bound = await asyncio.wait_for(seen, 5)
    release.set()
    await starting
    assert bound is not None and bound[:2] == (2.0, False)
