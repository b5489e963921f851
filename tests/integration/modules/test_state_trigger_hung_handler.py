"""State (and stream) trigger handlers run each in a task of their own, holding a place in their callee worker's
max_fired_calls_per_worker: one that never answers neither holds up the handlers registered after it nor takes
every max_fired_calls slot. Before, one task called them in turn: a healthy worker's state trigger got 0 of 45 writes
behind a hung one, which held every slot, and another worker's state writes failed with fire_limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our trigger handlers and max_fired_calls_per_worker")]

LIMIT = 40
SHARE = LIMIT // 4
WRITES = 45


async def test_a_hung_state_trigger_handler_holds_up_only_its_own_calls() -> None:
    got: list[Any] = []

    async def never(data: Any) -> None:
        await asyncio.Event().wait()

    async def seen(data: Any) -> None:
        got.append(data["key"])

    config = EngineConfig(host="127.0.0.1", port=0, max_fired_calls=LIMIT, fire_wait_timeout_ms=2_000,
                          modules=[ModuleSpec("modules::state::StateModule")])
    async with Engine(config=config) as engine, ModuleWorker(engine.url) as hung, \
            ModuleWorker(engine.url) as good, ModuleWorker(engine.url) as writer:
        await hung.function("hung::on", never)
        await hung.trigger("t-hung", "state", "hung::on", {"scope": "s"})  # registered first: called first before
        await good.function("good::on", seen)
        await good.trigger("t-good", "state", "good::on", {"scope": "s"})
        for i in range(WRITES):
            frame = await writer.call("state::set", {"scope": "s", "key": f"k{i}", "value": i})
            # before: from the 41st write on, fire_limit (the hung handler held every slot)
            assert "error" not in frame, frame
        await until(lambda: len(got) == WRITES)
        assert sorted(got) == sorted(f"k{i}" for i in range(WRITES))
        # the last good call's result may still be on its way back when its handler appended: settled once only the
        # hung calls are left in flight
        await until(lambda: engine.fired_calls.stats()["in_flight"] == SHARE)
        stats = engine.fired_calls.stats()
        assert stats["busiest_callee"] == SHARE and stats["skipped_callee_share"] == WRITES - SHARE
        assert stats["in_flight"] == SHARE
