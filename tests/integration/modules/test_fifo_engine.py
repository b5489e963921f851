"""FIFO queues under failures, inside a real engine with a real worker socket (memory store and real Redis):
a handler fails the first attempt of some messages and always fails a poison message, yet per message group
the successful processing order equals the enqueue order, and the poison message ends in the dead-letter queue
without blocking its group for good."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.services import require_redis

pytestmark = pytest.mark.our_engine("configures FIFO queues and their stores")

GROUPS = ("g-a", "g-b", "g-c")
PER_GROUP = 6
POISON = ("g-b", 2)  # always fails: dead-lettered after max_retries attempts


def queue_settings(store: str) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "queue_configs": {
            # The shape of the reference configuration's test-fifo-groups, with short retries.
            "fifo-groups": {"type": "fifo", "message_group_field": "group_id", "concurrency": 2, "max_retries": 3,
                            "backoff_ms": 20, "poll_interval_ms": 20},
        }
    }
    if store == "redis":
        settings["adapter"] = {"class": "modules::queue::RedisAdapter",
                               "config": {"redis_url": require_redis(), "key_prefix": f"test-{uuid.uuid4()}:"}}
    return settings


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    settings = queue_settings(request.param)
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", settings)])
    try:
        async with Engine(config=config) as running:
            yield running
    finally:
        adapter = settings.get("adapter")
        if adapter is not None:
            from redis.asyncio import Redis

            client = Redis.from_url(adapter["config"]["redis_url"])
            keys = [k async for k in client.scan_iter(match=f"{adapter['config']['key_prefix']}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


def fails_first_attempt(seq: int) -> bool:
    return seq % 2 == 1  # half the messages of every group fail once


async def test_group_order_survives_retries_and_a_dead_letter(engine: Engine) -> None:
    attempts: dict[tuple[str, int], int] = defaultdict(int)
    succeeded: dict[str, list[int]] = defaultdict(list)
    running_groups: set[str] = set()
    overlaps: list[str] = []
    done = asyncio.Event()
    expected = len(GROUPS) * PER_GROUP - 1  # every message but the poison one

    async def handle(data: dict[str, Any]) -> dict[str, bool]:
        group, seq = data["group_id"], data["seq"]
        if group in running_groups:
            overlaps.append(group)  # two messages of one group in flight at once would break FIFO
        running_groups.add(group)
        try:
            await asyncio.sleep(0)  # let a concurrent delivery of the same group show up, if the engine sent one
            attempts[(group, seq)] += 1
            if (group, seq) == POISON or (fails_first_attempt(seq) and attempts[(group, seq)] == 1):
                raise RuntimeError(f"{group}/{seq} attempt {attempts[(group, seq)]} fails")
            succeeded[group].append(seq)
            if sum(map(len, succeeded.values())) == expected:
                done.set()
            return {"ok": True}
        finally:
            running_groups.discard(group)

    async with ModuleWorker(engine.url) as worker:
        await worker.function("fifo::handle", handle)
        receipts: dict[tuple[str, int], str] = {}
        for seq in range(PER_GROUP):  # interleaved groups, as producers would send them
            for group in GROUPS:
                reply = await worker.call("fifo::handle", {"group_id": group, "seq": seq},
                                          action={"type": "enqueue", "queue": "fifo-groups"})
                receipts[(group, seq)] = reply["result"]["messageReceiptId"]
        await asyncio.wait_for(done.wait(), 20)

        for group in GROUPS:
            wanted = [seq for seq in range(PER_GROUP) if (group, seq) != POISON]
            assert succeeded[group] == wanted, (group, dict(succeeded))
        assert overlaps == []
        assert attempts[POISON] == 3  # max_retries total attempts
        assert all(attempts[(g, s)] == 2 for g in GROUPS for s in range(PER_GROUP)
                   if fails_first_attempt(s) and (g, s) != POISON)

        # The poison message's group went on only after it left for the DLQ (it comes after in the group).
        page = await worker.result("engine::queue::dlq_messages", {"topic": "fifo-groups"})
        assert [m["id"] for m in page["messages"]] == [receipts[POISON]], page
