"""A function an overwriting worker took goes back to its earlier owner when that worker leaves or unregisters it
(E5), and the engine says so (attack on custom streams: worker B took over a stream's functions from worker A, a
warning said so; B left and A's stale data came back with nothing in the log)."""

from __future__ import annotations

import logging

import pytest

from iii_engine import Engine, EngineConfig
from tests.integration.engine.raw import RawWorker, disconnect
from tests.polling import until

pytestmark = pytest.mark.our_engine("reads the engine's log")


async def test_a_function_going_back_to_its_earlier_owner_is_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        first = await RawWorker.connect(engine.url)
        await first.register("stream::get(s)")
        await until(lambda: engine.registry.functions.get("stream::get(s)") is not None)
        second = await RawWorker.connect(engine.url)
        await second.register("stream::get(s)")
        await until(lambda: engine.registry.functions["stream::get(s)"].owner == second.worker_id)
        await disconnect(engine, second)
        assert engine.registry.functions["stream::get(s)"].owner == first.worker_id
        lines = [r.getMessage() for r in caplog.records if "goes back" in r.getMessage()]
        # before: the overwrite was said, the way back not
        assert lines == [f"function stream::get(s) goes back to worker {first.worker_id}: worker {second.worker_id}, "
                         f"which overwrote it, left"], lines
        await first.close()
