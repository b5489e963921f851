"""Queue module against a fake engine: named queues, retries, DLQ, FIFO groups, topic mode, console functions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fake_services import FakeServices

from iii_engine.modules.base import EngineError
from iii_engine.modules.queue import QueueModule

WAIT = 5.0


class Recorder:
    """Collects payloads; ``await reached(n)`` returns once ``n`` arrived."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def reached(self, n: int) -> list[Any]:
        async def wait() -> None:
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT)
        return self.items


@pytest.fixture
async def make_module(services: FakeServices) -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    started: list[QueueModule] = []

    async def make(queue_configs: dict[str, Any]) -> QueueModule:
        module = QueueModule(services, {"queue_configs": queue_configs})
        await module.start()
        started.append(module)
        return module

    yield make
    for module in started:
        await module.stop()


async def test_enqueue_delivers_raw_payload_and_returns_uuid_receipt(services: FakeServices, make_module: Any) -> None:
    module = await make_module({"default": {}})
    got = Recorder()

    async def handler(data: Any) -> Any:
        got.add(data)
        return {"ok": True}

    services.add("orders::process", handler)
    receipt = await module.enqueue("default", "orders::process", {"order": 1})
    assert str(uuid.UUID(receipt)) == receipt
    assert await got.reached(1) == [{"order": 1}]


async def test_unknown_queue_and_fifo_payload_errors(make_module: Any) -> None:
    module = await make_module({"payment": {"type": "fifo", "message_group_field": "transaction_id"}})
    with pytest.raises(EngineError) as unknown:
        await module.enqueue("nope", "f", {})
    assert (unknown.value.code, unknown.value.message) == ("enqueue_error", "Queue 'nope' not found")
    with pytest.raises(EngineError, match="transaction_id") as missing:
        await module.enqueue("payment", "f", {"amount": 3})
    assert missing.value.code == "enqueue_error"
    with pytest.raises(EngineError, match="must not be null"):
        await module.enqueue("payment", "f", {"transaction_id": None})
    with pytest.raises(EngineError, match="transaction_id"):
        await module.enqueue("payment", "f", [1, 2])


async def test_failed_job_is_retried_with_backoff_then_succeeds(services: FakeServices, make_module: Any) -> None:
    module = await make_module({"q": {"max_retries": 3, "backoff_ms": 20}})
    attempts = Recorder()
    loop = asyncio.get_running_loop()

    async def flaky(data: Any) -> Any:
        attempts.add(loop.time())
        if len(attempts.items) < 3:
            raise RuntimeError("not yet")
        return "done"

    services.add("flaky", flaky)
    await module.enqueue("q", "flaky", {"n": 1})
    times = await attempts.reached(3)
    # backoff_ms * 2^(attempt-1): 20 ms then 40 ms
    assert times[1] - times[0] >= 0.019
    assert times[2] - times[1] >= 0.039
    stats = await services.call("engine::queue::topic_stats", {"topic": "q"})
    assert (stats["dlq"], stats["delayed"]) == (0, 0)


async def test_exhausted_job_goes_to_dlq_and_can_be_redriven_or_discarded(
    services: FakeServices, make_module: Any
) -> None:
    module = await make_module({"q": {"max_retries": 2, "backoff_ms": 1}})
    calls = Recorder()
    healthy = False

    async def handler(data: Any) -> Any:
        calls.add(data)
        if not healthy:
            raise RuntimeError("boom")
        return None

    services.add("h", handler)
    first = await module.enqueue("q", "h", {"id": 1})
    second = await module.enqueue("q", "h", {"id": 2})
    await calls.reached(4)

    async def dlq_size(n: int) -> dict[str, Any]:
        while True:
            page = await services.call("engine::queue::dlq_messages", {"topic": "q"})
            if page["total"] == n:
                return page  # type: ignore[no-any-return]
            await asyncio.sleep(0.01)

    page = await asyncio.wait_for(dlq_size(2), WAIT)
    ids = {m["id"] for m in page["messages"]}
    assert ids == {first, second}  # M2: the receipt id is the DLQ message id
    entry = page["messages"][0]
    assert entry["error"] == "invocation_failed: boom"  # the last attempt's error, not a fixed text
    assert entry["job"]["attempts"] == 2 and isinstance(entry["failed_at"], int)
    assert await services.call("engine::queue::dlq_topics", {}) == {"topics": [{"topic": "q", "count": 2}]}

    healthy = True
    redriven = await services.call("iii::queue::redrive_message", {"queue": "q", "message_id": first})
    assert redriven == {"queue": "q", "message_id": first, "redriven": 1}
    assert (await calls.reached(5))[4] == {"id": 1}
    discarded = await services.call("iii::queue::discard_message", {"queue": "q", "message_id": second})
    assert discarded == {"queue": "q", "message_id": second, "redriven": 1}
    again = await services.call("iii::queue::discard_message", {"queue": "q", "message_id": second})
    assert again["redriven"] == 0
    assert (await services.call("iii::queue::redrive", {"queue": "q"})) == {"queue": "q", "redriven": 0}
    with pytest.raises(EngineError) as unknown:
        await services.call("iii::queue::redrive", {"queue": "missing"})
    assert unknown.value.code == "queue_not_found"


async def test_concurrency_limits_jobs_in_flight(services: FakeServices, make_module: Any) -> None:
    module = await make_module({"q": {"concurrency": 2}})
    started = Recorder()
    gate = asyncio.Event()

    async def slow(data: Any) -> Any:
        started.add(data)
        await gate.wait()
        return None

    services.add("slow", slow)
    for i in range(5):
        await module.enqueue("q", "slow", i)
    await started.reached(2)
    stats = await services.call("engine::queue::topic_stats", {"topic": "q"})
    assert (stats["active"], stats["waiting"]) == (2, 3)
    gate.set()
    assert sorted(await started.reached(5)) == [0, 1, 2, 3, 4]


async def test_fifo_keeps_order_per_group_across_failures(services: FakeServices, make_module: Any) -> None:
    module = await make_module({"f": {"type": "fifo", "message_group_field": "g", "backoff_ms": 5}})
    seen = Recorder()
    failed_once: set[str] = set()

    async def handler(data: Any) -> Any:
        seen.add((data["g"], data["n"]))
        if data["g"] == "a" and data["n"] == 1 and "a1" not in failed_once:
            failed_once.add("a1")
            raise RuntimeError("first try of a1 fails")
        return None

    services.add("h", handler)
    for n in (1, 2, 3):
        await module.enqueue("f", "h", {"g": "a", "n": n})
        await module.enqueue("f", "h", {"g": "b", "n": n})
    items = await seen.reached(7)
    assert [n for g, n in items if g == "a"] == [1, 1, 2, 3]
    assert [n for g, n in items if g == "b"] == [1, 2, 3]


async def test_topic_mode_gives_each_job_to_one_subscriber(services: FakeServices, make_module: Any) -> None:
    await make_module({})
    got = Recorder()

    def subscriber(name: str) -> Any:
        async def handle(data: Any) -> Any:
            got.add((name, data))
            return None

        return handle

    services.add("s1", subscriber("s1"))
    services.add("s2", subscriber("s2"))
    # Jobs enqueued before any subscriber wait for one.
    assert await services.call("enqueue", {"topic": "t", "data": 0}) is None
    await services.trigger("queue", "tr1", "s1", {"topic": "t"})
    await services.trigger("queue", "tr2", "s2", {"topic": "t"})
    for i in range(1, 10):
        await services.call("enqueue", {"topic": "t", "data": i})
    items = await got.reached(10)
    assert sorted(d for _, d in items) == list(range(10))
    assert {name for name, _ in items} == {"s1", "s2"}
    with pytest.raises(EngineError) as empty:
        await services.call("enqueue", {"topic": "", "data": 1})
    assert empty.value.code == "topic_not_set"
    listed = await services.call("engine::queue::list_topics", {})
    assert {"topic": "t", "kind": "topic", "type": "standard", "subscribers": 2} in listed["topics"]


async def test_topic_condition_false_skips_the_job(services: FakeServices, make_module: Any) -> None:
    await make_module({})
    got = Recorder()

    async def handle(data: Any) -> Any:
        got.add(data)

    async def only_even(data: Any) -> Any:
        return data % 2 == 0

    services.add("h", handle)
    services.add("even", only_even)
    await services.trigger("queue", "tr", "h", {"topic": "nums", "condition_function_id": "even"})
    for i in range(4):
        await services.call("enqueue", {"topic": "nums", "data": i})
    await got.reached(2)
    # Each job is claimed in order, so by the time 3 is done both odd ones were skipped, none are left.
    stats = await services.call("engine::queue::topic_stats", {"topic": "nums"})
    assert sorted(got.items) == [0, 2]
    assert stats["dlq"] == 0


def test_bad_queue_configs_are_rejected_with_the_key_named(services: FakeServices) -> None:
    async def start(cfg: dict[str, Any]) -> None:
        await QueueModule(services, {"queue_configs": cfg}).start()

    with pytest.raises(ValueError, match="message_group_field"):
        asyncio.run(start({"p": {"type": "fifo"}}))
    with pytest.raises(ValueError, match=r"q\.max_retries"):
        asyncio.run(start({"q": {"max_retries": 0}}))
    with pytest.raises(ValueError, match="type"):
        asyncio.run(start({"q": {"type": "lifo"}}))
