"""Attack A-Q on the in-memory queue store's size: ``max_jobs`` counted jobs, not bytes, so 100,000 jobs of up to a
message's 4 MiB each (400 GB) were accepted into the engine's memory; a burst of 300 1 MiB enqueues grew the engine
by 311 MiB. ``max_memory_bytes`` bounds the JSON bytes of every queue's jobs and dead letters together, and the
sender of a job that does not fit gets an ``enqueue_error`` naming the setting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.our_engine("configures the queue module's memory bound")

WAIT = 5.0
BLOB = "x" * 10_000  # each job: ~10 KB of JSON; six fit under 64 KiB, seven do not


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    settings = {"queue_configs": {"q": {"max_retries": 1, "backoff_ms": 10}}, "max_memory_bytes": 65536}
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
            ModuleSpec("modules::queue::QueueModule", settings)])) as running:
        yield running


async def enqueue(worker: ModuleWorker, n: int) -> dict[str, Any]:
    return await worker.call("work", {"n": n, "blob": BLOB}, action={"type": "enqueue", "queue": "q"})


async def test_jobs_past_max_memory_bytes_are_refused_naming_it_and_every_accepted_one_runs(engine: Engine) -> None:
    async with ModuleWorker(engine.url) as worker:
        replies = [await enqueue(worker, n) for n in range(10)]  # nobody serves "work" yet: the jobs wait
        accepted = [n for n, reply in enumerate(replies) if "result" in reply]
        assert accepted == list(range(6)), replies
        error = replies[6]["error"]
        assert error["code"] == "enqueue_error"
        assert error["message"].startswith("Queue 'q': a job of 10")
        assert "of its 65536 bytes of jobs and dead letters (max_memory_bytes)" in error["message"]
        topic = await worker.call("enqueue", {"topic": "t", "data": BLOB})
        assert topic["error"]["code"] == "enqueue_error" and "max_memory_bytes" in topic["error"]["message"]

        ran: asyncio.Queue[int] = asyncio.Queue()

        async def record(data: Any) -> None:
            ran.put_nowait(data["n"])

        await worker.function("work", record)
        assert sorted([await asyncio.wait_for(ran.get(), WAIT) for _ in accepted]) == accepted
        # done jobs give their bytes back: the queue takes jobs again
        assert "messageReceiptId" in (await enqueue(worker, 99))["result"]
        assert await asyncio.wait_for(ran.get(), WAIT) == 99


async def test_dead_letters_count_and_a_discard_makes_room(engine: Engine) -> None:
    async with ModuleWorker(engine.url) as worker:
        failed: asyncio.Queue[int] = asyncio.Queue()

        async def fail(data: Any) -> None:
            failed.put_nowait(data["n"])
            raise RuntimeError("no")

        await worker.function("work", fail)
        for n in range(6):
            assert "result" in await enqueue(worker, n)
            await asyncio.wait_for(failed.get(), WAIT)
        # The DLQ move follows the failed result with no event a client can await: poll that condition.
        while (await worker.result("engine::queue::topic_stats", {"topic": "q"}))["dlq"] != 6:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        refused = await enqueue(worker, 6)
        assert refused["error"]["code"] == "enqueue_error" and "max_memory_bytes" in refused["error"]["message"]
        page = await worker.result("engine::queue::dlq_messages", {"topic": "q"})
        assert len(page["messages"]) == 6  # the dead letters are all kept
        one = page["messages"][0]["id"]
        assert (await worker.result("iii::queue::discard_message", {"queue": "q", "message_id": one}))["redriven"] == 1
        assert "result" in await enqueue(worker, 7)
        assert await asyncio.wait_for(failed.get(), WAIT) == 7
        while (await worker.result("engine::queue::topic_stats", {"topic": "q"}))["dlq"] != 6:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # a redrive needs no room: the letters' bytes were counted already
        assert (await worker.result("iii::queue::redrive", {"queue": "q"}))["redriven"] == 6
        assert sorted([await asyncio.wait_for(failed.get(), WAIT) for _ in range(6)]) == [1, 2, 3, 4, 5, 7]
