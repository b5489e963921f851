"""Attack Q-E on the cron module through the wire: malformed, huge and never-firing expressions, and trigger ids
that come and go."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = pytest.mark.our_engine("reads the cron module's log lines and lock table")

CRON = "modules::cron::CronModule"


def cron_engine(settings: dict[str, Any] | None = None) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(CRON, settings or {})]))


async def register(worker: ModuleWorker, trigger_id: str, expression: str, function_id: str = "qe::tick") -> None:
    await worker.send({"type": "registertrigger", "id": trigger_id, "trigger_type": "cron",
                       "function_id": function_id, "config": {"expression": expression}})


async def trigger_ids(worker: ModuleWorker) -> list[str]:
    return [t["id"] for t in (await worker.result("engine::triggers::list", {}))["triggers"]]


async def test_non_ascii_digits_are_refused_naming_the_field(caplog: pytest.LogCaptureFixture) -> None:
    # before: "²".isdigit() is true and int("²") raised ValueError: a traceback, no field named
    caplog.set_level(logging.WARNING, logger="iii_engine")
    async with cron_engine() as engine, ModuleWorker(engine.url) as worker:
        await register(worker, "qe-sup", "² * * * * *")
        await register(worker, "qe-step", "0 */٣ * * * *")
        await worker.sync()
        assert await trigger_ids(worker) == []
    rejected = [r.getMessage() for r in caplog.records if "rejected: invalid_cron_expression" in r.getMessage()]
    assert len(rejected) == 2, [r.getMessage() for r in caplog.records]
    assert "seconds: '²' is not a number" in rejected[0]
    assert "minutes: bad step '٣'" in rejected[1]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_huge_expression_is_refused_and_quoted_short(caplog: pytest.LogCaptureFixture) -> None:
    # before: a 1 MB "*,*,…" was parsed (about a second of the engine's loop), accepted, and an invalid one was
    # quoted whole in the log line
    caplog.set_level(logging.WARNING, logger="iii_engine")
    async with cron_engine() as engine, ModuleWorker(engine.url) as worker:
        await register(worker, "qe-huge", "*" + ",*" * 500_000 + " * * * * *")
        await register(worker, "qe-huge-bad", "x" * 100_000)
        await worker.sync()
        assert await trigger_ids(worker) == []
    lines = [r.getMessage() for r in caplog.records if "invalid_cron_expression" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "1000011 characters, more than 4096" in lines[0]
    assert all(len(line) < 600 for line in lines), [len(line) for line in lines]


async def test_never_firing_expressions_cost_the_loop_little() -> None:
    # before: a day no month has ("31" in 30-day months) walked every day up to 2100: 16-55 ms of the engine's loop
    # per trigger, so 40 such registrations held every other worker for over half a second
    async with cron_engine() as engine, ModuleWorker(engine.url) as worker:
        await worker.sync()
        started = time.process_time()
        for i in range(40):
            await register(worker, f"qe-never-{i}", "* * * 31 2,4,6,9,11 *")
        await worker.sync()
        spent = time.process_time() - started
        assert await trigger_ids(worker) == []
    assert spent < 0.3, f"{spent:.2f} s of CPU for 40 refused registrations"


async def test_the_in_process_lock_forgets_trigger_ids_that_are_gone() -> None:
    # before: every trigger id ever fired stayed in the KvCronLock table for good (a worker restarted with new
    # trigger ids grew it each time)
    settings = {"adapter": {"class": "modules::cron::KvCronAdapter", "config": {"lock_ttl_ms": 200}}}
    fired: set[str] = set()

    async def tick(data: Any) -> None:
        fired.add(data["job_id"])

    async with cron_engine(settings) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("qe::tick", tick)
        lock: Any = engine.module("cron")._lock  # type: ignore[union-attr]
        for round_ in range(4):
            ids = [f"qe-{round_}-{i}" for i in range(100)]
            for trigger_id in ids:
                await register(worker, trigger_id, "* * * * * *")
            await worker.sync()
            await until(lambda: fired.issuperset(ids))  # noqa: B023 - awaited within this iteration
            for trigger_id in ids:
                await worker.send({"type": "unregistertrigger", "id": trigger_id, "trigger_type": "cron"})
            await worker.sync()
        assert len(lock._last) <= 250, len(lock._last)
