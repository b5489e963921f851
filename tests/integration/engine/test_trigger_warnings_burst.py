"""Triggers left pending (unknown type) or rejected by their type are logged one line each up to a burst per
interval, the rest counted in one warning: before, each logged its own warning (100,000 triggers of a type nobody
provides, 100,000 lines)."""

from __future__ import annotations

import logging

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.engine import UNDECODABLE_LOG_BURST
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("reads our engine's log lines")

N = 500


async def test_a_flood_of_pending_and_rejected_triggers_costs_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::cron::CronModule", {})])
    with caplog.at_level(logging.WARNING, logger="iii_engine"):
        async with Engine(config=config) as engine:
            worker = await RawWorker.connect(engine.url)
            for i in range(N):
                await worker.send({"type": "registertrigger", "id": f"p{i}", "trigger_type": "nobody::type",
                                   "function_id": "f", "config": {}})
                await worker.send({"type": "registertrigger", "id": f"r{i}", "trigger_type": "cron",
                                   "function_id": "f", "config": {"expression": "not cron"}})
            await worker.sync()
            assert len(engine.registry.pending_triggers) == N
            await worker.close()
    lines = [r.getMessage() for r in caplog.records]
    counted = [line for line in lines if line.startswith("triggers: ")]
    own = [line for line in lines if line not in counted and ("waits for unknown trigger type" in line
                                                               or "rejected: invalid_cron_expression" in line)]
    # before: 1,000 lines, one per trigger
    assert len(own) == UNDECODABLE_LOG_BURST
    assert own[0].endswith(": trigger p0 waits for unknown trigger type nobody::type (pending)")
    assert "trigger r0 (cron) rejected: invalid_cron_expression" in own[1]
    assert 1 <= len(counted) <= 2, counted
    total = sum(int(line.split()[1]) + int(line.split(", ")[1].split()[0]) for line in counted)
    assert total == 2 * N - UNDECODABLE_LOG_BURST
