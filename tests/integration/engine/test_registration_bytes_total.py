"""``max_registration_bytes``: what every worker's registrations keep together is bounded, not only each worker's
(before, one client held ``max_registration_bytes_per_worker`` per connection it opened: an attack grew an engine by
~255 MB per connection, linear in connections, up to ``max_workers``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig

from .raw import RawWorker
from .raw import disconnect as _gone
from .test_registration_bytes import BUDGET, _trigger

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our registration byte bounds")]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_registration_bytes_per_worker=BUDGET,
                          max_registration_bytes=2 * BUDGET)
    async with Engine(config=config) as running:
        yield running


async def test_workers_together_stop_at_the_engine_wide_budget(engine: Engine,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine.limits")
    workers = [await RawWorker.connect(engine.url) for _ in range(3)]
    for n, worker in enumerate(workers):
        for i in range(3):  # three fit one worker's budget
            await worker.send(_trigger(f"w{n}-t{i}"))
        await worker.sync()
    kept = [len(engine.registry.triggers_of_registrant(worker.worker_id)) for worker in workers]
    # before: [3, 3, 3], each worker within its own budget and nothing bounding them together
    assert sum(kept) < 9 and kept[:2] == [3, 3], kept
    assert engine.registry.worker_bytes <= 2 * BUDGET
    assert engine.registry.worker_bytes == sum(engine.registry.bytes_held(w.worker_id) for w in workers)
    refusal = next(r.getMessage() for r in caplog.records if "max_registration_bytes " in r.getMessage())
    assert refusal.startswith(f"worker {workers[2].worker_id}: trigger 'w2-t")
    await _gone(engine, workers[0])  # a worker's leaving gives its bytes back to the others
    assert engine.registry.worker_bytes == sum(engine.registry.bytes_held(w.worker_id) for w in workers[1:])
    await workers[2].send(_trigger("w2-again"))
    await workers[2].sync()
    assert "w2-again" in {t.id for t in engine.registry.triggers_of_registrant(workers[2].worker_id)}


async def test_a_takeover_near_a_full_budget_counts_the_bytes_it_frees(engine: Engine) -> None:
    first, taker = [await RawWorker.connect(engine.url) for _ in range(2)]
    await first.send({"type": "registertriggertype", "id": "tick", "description": "d" * 1000})
    await first.sync()
    engine.limits.max_total_registration_bytes = engine.registry.worker_bytes  # full
    await taker.send({"type": "registertriggertype", "id": "tick", "description": "e" * 1000})
    await taker.sync()
    # before: refused, the new entry counted on top of the one it replaces
    assert engine.registry.trigger_types["tick"].owner == taker.worker_id
    assert engine.registry.worker_bytes <= engine.limits.max_total_registration_bytes
