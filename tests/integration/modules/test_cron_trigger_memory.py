"""What a cron trigger keeps alive in the engine is within what its registrant is charged for it.

Before, a cron trigger was charged 6 KiB beyond its registration (``retained_bytes_per_trigger``) and cost 17.9 KiB
(engine RSS over 20,000 triggers): its parsed expression alone held seven frozensets, 14.4 KiB, built anew for
every trigger, so ``max_registration_bytes_per_worker`` bounded a third of what it was meant to.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.timeout(30)

N = 500  # (tracemalloc slows the engine down: 1,500 distinct expressions took 4.6 s of a 5 s sync wait)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")])
    async with Engine(config=config) as engine:
        yield engine


def expression(n: int) -> str:
    """A distinct expression per trigger, every field restricted (nothing of one shared with the next)."""
    return f"{n % 60} {n // 60 % 60} {n % 24},{(n * 7) % 24} 1,{n % 27 + 2},29 */{n % 11 + 1} * {2030 + n % 60}-2100"


@pytest.mark.parametrize("distinct", [False, True], ids=["one expression", "distinct expressions"])
async def test_a_cron_trigger_costs_no_more_than_its_charge(engine: Engine, distinct: bool) -> None:
    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::tick", lambda data: _none())
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(N):
                await worker.send({"type": "registertrigger", "id": f"t{n}", "trigger_type": "cron",
                                   "function_id": "app::tick",
                                   "config": {"expression": expression(n) if distinct else "0 0 0 1 1 *"}})
            await worker.sync()
            gc.collect()
            cost = (tracemalloc.get_traced_memory()[0] - before) / N
        finally:
            tracemalloc.stop()
        charged = [engine.registry.find_trigger(f"t{n}") for n in range(N)]
        assert all(entry is not None for entry in charged), "a trigger was not registered"
        charge = sum(entry.size for entry in charged if entry is not None) / N
        # before: 17+ KiB kept against a charge of 6 KiB and the registration's own bytes
        assert cost <= charge, f"{cost:.0f} bytes kept per cron trigger, {charge:.0f} charged"
        assert charge <= 2 * cost, f"{charge:.0f} bytes charged per cron trigger, {cost:.0f} kept: charged for nothing"


async def _none() -> None:
    return None
