"""Attack R-Q on ``max_memory_bytes`` through a running engine: concurrent enqueues to a standard queue, a FIFO queue
and a topic, handlers that fail (retries with a growing ``attempts``, dead letters), a redrive and discards. Once
every job is done or discarded the store counts 0 bytes; before, a dead letter and a retried job were counted at
their first size, so the count drifted from what the store held."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.store import HELD_OVERHEAD, MemoryQueueStore
from tests.polling import until

pytestmark = pytest.mark.our_engine("reads the queue module's in-memory store")

N = 60


def held_bytes(store: MemoryQueueStore) -> int:
    """What every job and dead letter the store holds counts, measured from scratch: its data's JSON text, a fixed
    overhead, the strs of its function id and lane (and a dead letter's error)."""
    def one(payload: bytes, function_id: str | None, lane: str) -> int:
        return len(payload) + HELD_OVERHEAD + (0 if function_id is None else sys.getsizeof(function_id)) \
            + sys.getsizeof(lane)

    return sum(sum(one(held.payload, held.function_id, held.lane) for held in q.jobs.values())
               + sum(one(held.job.payload, held.job.function_id, held.job.lane) + sys.getsizeof(held.error)
                     for held in q.dlq.values())
               for q in store._queues.values())


async def test_the_count_follows_retries_and_dead_letters_and_ends_at_zero() -> None:
    queue = {"max_retries": 2, "backoff_ms": 1, "concurrency": 4}
    settings = {"queue_configs": {"s": queue, "f": {**queue, "type": "fifo", "message_group_field": "g"}},
                "max_memory_bytes": 10_000_000}
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::queue::QueueModule", settings)]))
    async with engine, ModuleWorker(engine.url) as worker:
        module = engine.module("queue")
        assert isinstance(module, QueueModule) and isinstance(module.store, MemoryQueueStore)
        store = module.store
        healed = asyncio.Event()

        async def work(data: Any) -> None:
            if data["n"] % 3 == 0 and not healed.is_set():
                raise RuntimeError("fails every attempt: a dead letter")

        await worker.function("work", work)
        await worker.trigger("t1", "queue", "work", {"topic": "t", "queue_config": {"maxRetries": 2,
                                                                                  "backoffDelayMs": 1}})
        sends = []
        for n in range(N):
            data = {"n": n, "g": str(n % 4), "text": "é" * n}
            sends.append(worker.call("work", data, action={"type": "enqueue", "queue": "s"}))
            sends.append(worker.call("work", data, action={"type": "enqueue", "queue": "f"}))
            sends.append(worker.call("enqueue", {"topic": "t", "data": data}))
        replies = await asyncio.gather(*sends)
        assert all("error" not in reply for reply in replies), [r for r in replies if "error" in r][:3]

        def dead(name: str) -> int:
            return len(store._queues[name].dlq) if name in store._queues else 0

        letters = N // 3
        await until(lambda: all(dead(q) == letters for q in ("__fn_queue::s", "__fn_queue::f", "__topic::t"))
                    and not any(q.jobs for q in store._queues.values()))
        assert store.used_bytes == held_bytes(store) > 0
        healed.set()
        assert (await worker.result("iii::queue::redrive", {"queue": "s"}))["redriven"] == letters
        for name in ("f", "t"):
            page = await worker.result("engine::queue::dlq_messages", {"topic": name, "limit": 1000})
            for message in page["messages"]:
                discard = {"queue": name, "message_id": message["id"]}
                answer = await worker.result("iii::queue::discard_message", discard)
                assert answer["redriven"] == 1
        await until(lambda: not any(q.jobs or q.dlq for q in store._queues.values()))
        assert held_bytes(store) == 0
        assert store.used_bytes == 0
