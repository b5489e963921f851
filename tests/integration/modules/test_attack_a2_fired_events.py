"""Attack on the max_fired_calls bound (A2): engine events skipped for want of room, real engine.

``engine::functions-available`` tells a listener the engine's whole function set: when its call is skipped (no
room), the listener must still hear of the set once there is room, not only at the next change (which may never
come).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from module_worker import ModuleWorker
from test_fired_calls_bound import until

from iii_engine import Engine, EngineConfig

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls bound")]


async def test_a_functions_available_call_skipped_for_want_of_room_comes_once_there_is_room() -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_fired_calls=1,
                          functions_available_debounce_ms=20)
    seen: asyncio.Queue[list[str]] = asyncio.Queue()

    async def on_available(data: Any) -> None:
        await seen.put(sorted(f["function_id"] for f in data["functions"]))

    async with Engine(config=config) as engine, ModuleWorker(engine.url) as listener:
        await listener.function("fa::on", on_available)
        await listener.trigger("fa", "engine::functions-available", "fa::on", {})
        assert "fa::on" in await asyncio.wait_for(seen.get(), 5)  # its own registration
        await until(lambda: engine.fired_calls.in_flight == 0)
        assert engine.fired_calls.try_take()  # the engine is full
        async with ModuleWorker(engine.url) as other:
            await other.function("new::fn", on_available)
            await until(lambda: engine.fired_calls.skipped == 1)  # the change's call: skipped, counted
            engine.fired_calls.release()
            # before: never (the change was taken as told; only a later change would have told it)
            assert "new::fn" in await asyncio.wait_for(seen.get(), 5)
        assert "new::fn" not in await asyncio.wait_for(seen.get(), 5)  # and later changes as before
