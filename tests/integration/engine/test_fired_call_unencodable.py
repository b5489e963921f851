"""A trigger-fired call whose payload has no JSON form is logged as not made, its slot given back; before, its task
ended with the ValueError, reported by asyncio only as "Task exception was never retrieved" when collected."""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii_engine import Engine, EngineConfig
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("fires a call from inside our engine")


async def test_a_fired_call_with_no_json_form_is_logged_and_its_slot_given_back(
        caplog: pytest.LogCaptureFixture) -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await worker.register("w::f")
        await worker.sync()
        with caplog.at_level(logging.INFO, logger="iii_engine"):
            assert engine.fire("w::f", {"value": float("inf")})
            tasks = [task for task in asyncio.all_tasks() if "Invocations._fire" in repr(task.get_coro())]
            assert len(tasks) == 1
            await asyncio.wait(tasks, timeout=5)
        assert tasks[0].done() and tasks[0].exception() is None  # before: ValueError, never retrieved
        assert engine.fired_calls.in_flight == 0 and not engine.invocations.pending
        lines = [r.getMessage() for r in caplog.records if "trigger-fired call of w::f" in r.getMessage()]
        assert lines == ["trigger-fired call of w::f not made: serialization_error: the call of w::f could not be "
                         "written for its worker (NaN and Infinity are not valid JSON)"]
        await worker.nothing_for(0.2)  # nothing was sent to the worker
        await worker.close()
