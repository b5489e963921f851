"""A function registered on the engine itself (``Engine.register_function``) is kept across stops, also when a module
registers the same id: the module's serves while it runs, and the engine's comes back at the module's stop.

Before: a module's registration replaced the engine's for good, and the module's stop then removed the id: after
the stop ``state::get`` was gone (registered before the start), or gone after the next run (registered after it).
"""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import BuiltinFunction, InvocationContext
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.timeout(30)

_GET = {"scope": "s", "key": "k"}


async def _mine(data: Any, ctx: InvocationContext) -> Any:
    return "engine-level"


def _engine() -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::state::StateModule")]))


@pytest.mark.parametrize("registered", ["before the start", "during the run"])
async def test_an_engine_level_function_under_a_modules_id_is_kept_across_runs(registered: str) -> None:
    engine = _engine()
    if registered == "before the start":
        engine.register_function(BuiltinFunction("state::get", _mine))
    await engine.start()
    if registered == "during the run":
        engine.register_function(BuiltinFunction("state::get", _mine))
        assert await engine.invoke("state::get", _GET) == "engine-level"  # over the module's: the latest wins
    else:
        assert await engine.invoke("state::get", _GET) is None  # the state module's while it runs
    await engine.stop()
    assert await engine.invoke("state::get", _GET) == "engine-level"  # before: gone (registered before the start)
    await engine.start()
    assert await engine.invoke("state::get", _GET) is None  # the next run's module registers it again
    await engine.stop()
    assert await engine.invoke("state::get", _GET) == "engine-level"  # before: gone


async def test_an_engine_level_function_comes_back_after_a_worker_that_overwrote_the_modules() -> None:
    engine = _engine()
    engine.register_function(BuiltinFunction("state::get", _mine))
    await engine.start()
    worker = await RawWorker.connect(engine.url)
    await worker.register("state::get")  # over the state module's: the module's stop finds the worker's current
    await worker.sync()
    assert engine.registry.functions["state::get"].owner == worker.worker_id
    await engine.stop()  # the module stops first, then the worker's disconnect restores what it overwrote
    assert await engine.invoke("state::get", _GET) == "engine-level"  # before: gone
