"""Many cron triggers due at one instant share one timer and go on a batch per turn of the event loop.

Before, each schedule slept on a timer of its own and every schedule of a tick woke in the same turn of the loop,
which ran them all (and then all their ticks' tasks) before reading a socket again: with 10,000 every-second
triggers another worker's call waited up to 0.3-0.4 s (p95 264-339 ms); with 40,000, 2.6-2.8 s every time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.limits import FiredHold
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

N = 1500
BATCH = 256  # schedules going on in one turn of the loop, at most


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule")])
    async with Engine(config=config) as engine:
        yield engine


async def none(data: Any) -> None:
    return None


async def test_the_schedules_of_one_tick_go_on_a_batch_per_turn_of_the_loop(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    cron = engine.module("cron")
    assert isinstance(cron, CronModule)
    loop = asyncio.get_running_loop()
    turn = 0

    def next_turn() -> None:  # runs once in every turn of the loop
        nonlocal turn
        turn += 1
        loop.call_soon(next_turn)

    per_turn: Counter[int] = Counter()
    take = engine.fired_calls.try_take

    def counted(n: int = 1, size: int = 0) -> FiredHold | None:  # a schedule going on past its tick takes a slot
        per_turn[turn] += 1
        return take(n, size)

    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::tick", none)
        for n in range(N):
            await worker.send({"type": "registertrigger", "id": f"t{n}", "trigger_type": "cron",
                               "function_id": "app::tick", "config": {"expression": "* * * * * *"}})
        await worker.sync()
        assert len(cron._schedules) == N
        monkeypatch.setattr(engine.fired_calls, "try_take", counted)
        loop.call_soon(next_turn)
        await until(lambda: sum(per_turn.values()) >= 2 * N, within=10)
        # before: all of a tick's schedules in one turn (1,500)
        assert max(per_turn.values()) <= BATCH, per_turn.most_common(3)
        assert cron_module._TURN_BATCH == BATCH
        assert len(cron._instants) <= 2  # one timer for the next tick (and one being woken), not one per trigger
        assert cron.missed_ticks == 0


async def test_a_tick_fires_for_the_others_when_the_schedule_sleeping_for_it_is_unregistered(engine: Engine) -> None:
    fired: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def tick(data: Any) -> None:
        await fired.put((data["job_id"], data["scheduled_time"]))

    async with ModuleWorker(engine.url) as worker:
        await worker.function("app::tick", tick)
        for name in ("first", "second", "third"):  # "first" sleeps for the next tick, the others wait for it
            await worker.trigger(name, "cron", "app::tick", {"expression": "* * * * * *"})
        await worker.send({"type": "unregistertrigger", "id": "first", "trigger_type": "cron"})
        await worker.sync()
        gone = datetime.now(UTC)
        got: list[str] = []
        while len(got) < 4:
            job, scheduled = await asyncio.wait_for(fired.get(), 3)
            if datetime.fromisoformat(scheduled) > gone:
                got.append(job)
        assert sorted(got) == ["second", "second", "third", "third"]
