"""Void calls of a function no worker serves are dropped as production drops them, but counted and logged at most
once per interval: one worker's backlog of voids sent after an engine restart, before their callee is back, wrote
one WARNING line per call (10,000 calls, 10,000 lines, 1.6 MB of log)."""

from __future__ import annotations

import logging

import pytest

from iii_engine import Engine
from iii_engine.registry import FunctionEntry

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our log of dropped void calls")]


async def test_a_burst_of_voids_to_an_unknown_function_logs_one_line(engine: Engine,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caller = await RawWorker.connect(engine.url)
    try:
        with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
            for i in range(1000):
                await caller.send({"type": "invokefunction", "function_id": "nobody::here", "data": {"i": i},
                                   "action": {"type": "void"}})
            await caller.sync()  # (every frame before it handled)
        lines = [r.getMessage() for r in caplog.records if "void call(s) of unknown functions" in r.getMessage()]
        assert engine.invocations.unknown_void_calls == 1000
        assert len(lines) == 1, lines
        assert lines[0].startswith("1 void call(s) of unknown functions dropped")
        assert "'nobody::here'" in lines[0] and caller.worker_id in lines[0]
    finally:
        await caller.close()


async def test_a_void_to_a_function_whose_worker_is_gone_is_counted(engine: Engine) -> None:
    """The registration still there, its worker no longer connected (its cleanup under way): dropped, counted too
    (before: dropped without a word)."""
    engine.registry.add_function(FunctionEntry("ghost::f", owner="a-worker-that-left"))
    caller = await RawWorker.connect(engine.url)
    try:
        for _ in range(3):
            await caller.send({"type": "invokefunction", "function_id": "ghost::f", "data": {},
                               "action": {"type": "void"}})
        await caller.sync()
        assert engine.invocations.unknown_void_calls == 3
    finally:
        await caller.close()
