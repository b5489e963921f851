"""A consumer's stop finishes the jobs whose handler ended (done, retry, dead letter), gives back those still
running, and is bounded when the store hangs; the module's stop lets store writes under way end before it closes
the store. Run against the in-memory store and a real Redis (unique key prefix per test)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fake_services import FakeServices

from iii_engine.modules.base import EngineError
from iii_engine.modules.queue import module as queue_module
from iii_engine.modules.queue.consumer import QueueConsumer
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import DeadLetter, Job, MemoryQueueStore, QueueCounts, QueueStore
from tests.services import REDIS_URL, require_redis

Q = "__fn_queue::q"
WAIT = 10.0
LETTER = Job.new("__fn_queue::default", "f", {"dead": True})


class Gated:
    """Delegates to ``inner``; a method given a gate announces it was entered, waits for its gate (before or after
    the real call), then announces it finished."""

    def __init__(self, inner: QueueStore) -> None:
        self.inner = inner
        self.entered: dict[str, asyncio.Event] = {}
        self.finished: dict[str, asyncio.Event] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.after: set[str] = set()
        self.calls: list[str] = []

    def gate(self, name: str, *, after_the_call: bool = False) -> asyncio.Event:
        self.entered[name], self.finished[name], self.gates[name] = asyncio.Event(), asyncio.Event(), asyncio.Event()
        if after_the_call:
            self.after.add(name)
        return self.gates[name]

    def __getattr__(self, name: str) -> Any:
        real: Callable[..., Awaitable[Any]] = getattr(self.inner, name)
        if name not in self.gates:
            return real

        async def gated(*args: Any, **kwargs: Any) -> Any:
            self.entered[name].set()
            if name in self.after:
                result = await real(*args, **kwargs)
                await self.gates[name].wait()
            else:
                await self.gates[name].wait()
                result = await real(*args, **kwargs)
            self.calls.append(name)
            self.finished[name].set()
            return result

        return gated


async def _drop_keys(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)  # the Redis the stores here were opened on
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], QueueStore]]:
    """Opens stores that share the same jobs (a restarted engine sees what the stopped one left)."""
    if request.param == "memory":
        memory = MemoryQueueStore()
        yield lambda: memory
        return
    from iii_engine.modules.queue.redis_store import RedisQueueStore

    url, prefix = require_redis(), f"test-{uuid.uuid4()}:"
    opened: list[RedisQueueStore] = []

    def open_one() -> QueueStore:
        opened.append(RedisQueueStore(url, key_prefix=prefix))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()
    await _drop_keys(prefix)


def consumer_on(store: Any, run: Callable[[Job], Awaitable[None]], **settings: Any) -> QueueConsumer:
    stop_ms = settings.pop("stop_ms", 5000)
    return QueueConsumer(store, Q, QueueSettings(**settings), run, stop_timeout_ms=stop_ms)


async def stop_once_the_loop_ended(consumer: QueueConsumer) -> asyncio.Task[None]:
    """Start the stop and return once it has ended the consumer loop: the point where a stop that cancels every
    job task has done so (its wake-up on the loop's end comes before ours)."""
    loop_task = consumer._loop_task
    assert loop_task is not None
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.wait({loop_task}, timeout=WAIT)
    return stopping


async def fails(job: Job) -> None:
    raise RuntimeError("boom")


async def succeeds(job: Job) -> None:
    return None


@pytest.mark.parametrize(
    ("step", "handler", "settings", "left"),
    [
        ("ack", succeeds, {}, QueueCounts(0, 0, 0, 0)),
        ("retry", fails, {"max_retries": 3, "backoff_ms": 60_000}, QueueCounts(0, 0, 1, 0)),
        ("dead", fails, {"max_retries": 1}, QueueCounts(0, 0, 0, 1)),
    ],
)
async def test_a_job_whose_handler_ended_is_finished_by_the_stop_not_left_active(
    stores: Callable[[], QueueStore], step: str, handler: Callable[[Job], Awaitable[None]],
    settings: dict[str, Any], left: QueueCounts,
) -> None:
    store = Gated(stores())
    gate = store.gate(step)
    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, handler, **settings)
    consumer.start()
    await asyncio.wait_for(store.entered[step].wait(), WAIT)
    stopping = await stop_once_the_loop_ended(consumer)
    gate.set()
    await asyncio.wait_for(stopping, WAIT)
    assert store.calls.count(step) == 1
    # A later engine on the same store finds nothing active: nothing comes back after the lease to run again.
    assert await stores().counts(Q) == left


async def test_a_failed_attempt_stored_at_the_stop_counts(stores: Callable[[], QueueStore]) -> None:
    store = Gated(stores())
    gate = store.gate("retry")
    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, fails, max_retries=5, backoff_ms=0)
    consumer.start()
    await asyncio.wait_for(store.entered["retry"].wait(), WAIT)
    stopping = await stop_once_the_loop_ended(consumer)
    gate.set()
    await asyncio.wait_for(stopping, WAIT)
    again = await stores().claim(Q, now_ms=2**62, lease_ms=1000)
    assert again is not None and again.attempts == 1


async def test_a_running_handler_is_cancelled_and_its_job_runs_on_the_next_consumer(
    stores: Callable[[], QueueStore],
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def stuck(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    await stores().push(Q, Job.new(Q, "f", {"n": 7}))
    first = consumer_on(stores(), stuck)
    first.start()
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.wait_for(first.stop(), WAIT)
    assert await stores().counts(Q) == QueueCounts(1, 0, 0, 0)
    ran: list[Any] = []

    async def record(job: Job) -> None:
        ran.append(job.data)
        release.set()

    second = consumer_on(stores(), record)
    second.start()
    try:
        await asyncio.wait_for(release.wait(), WAIT)
    finally:
        await second.stop()
    assert ran == [{"n": 7}]
    assert await stores().counts(Q) == QueueCounts(0, 0, 0, 0)


async def test_a_release_is_not_cut_short_when_the_stop_itself_is_cancelled(stores: Callable[[], QueueStore]) -> None:
    store = Gated(stores())
    gate = store.gate("release")
    started = asyncio.Event()

    async def stuck(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, stuck)
    consumer.start()
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.wait_for(store.entered["release"].wait(), WAIT)
    stopping.cancel()  # a second cancellation (the engine's stop was itself cancelled)
    await asyncio.wait({stopping}, timeout=WAIT)
    gate.set()
    await asyncio.wait_for(store.finished["release"].wait(), WAIT)
    assert await stores().counts(Q) == QueueCounts(1, 0, 0, 0)


async def test_a_job_claimed_while_stopping_is_given_back(stores: Callable[[], QueueStore]) -> None:
    store = Gated(stores())
    gate = store.gate("claim_next", after_the_call=True)  # the store took the job; its answer is on its way
    ran: list[Job] = []

    async def record(job: Job) -> None:
        ran.append(job)

    consumer = consumer_on(store, record)
    await store.push(Q, Job.new(Q, "f", 1))
    consumer.start()
    await asyncio.wait_for(store.entered["claim_next"].wait(), WAIT)
    stopping = asyncio.create_task(consumer.stop())
    asyncio.get_running_loop().call_soon(gate.set)  # runs after the stop's first step (the ready queue is FIFO)
    await asyncio.wait_for(stopping, WAIT)
    assert ran == []
    assert await stores().counts(Q) == QueueCounts(1, 0, 0, 0)


async def test_a_store_that_hangs_bounds_the_stop_which_names_the_queue_and_the_jobs_left(
    stores: Callable[[], QueueStore], caplog: pytest.LogCaptureFixture,
) -> None:
    store = Gated(stores())
    store.gate("ack")  # never opened
    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, succeeds, lease_ms=60_000, stop_ms=200)
    consumer.start()
    await asyncio.wait_for(store.entered["ack"].wait(), WAIT)
    with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.consumer"):
        await asyncio.wait_for(consumer.stop(), WAIT)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"queue {Q}: the store did not answer within the stop's 200 ms; 1 job(s) left active run "
                        "again once their lease (60000 ms) runs out"]
    assert (await stores().counts(Q)).active == 1  # left active, as said: its lease brings it back


# -- the module's stop -----------------------------------------------------------------------------------------


async def test_enqueues_after_the_stop_began_are_refused_not_stored_in_a_closed_store() -> None:
    services = FakeServices()
    module = queue_module.QueueModule(services, {"queue_configs": {"default": {}}})
    await module.start()
    await services.trigger("queue", "t1", "f", {"topic": "known"})
    await module.stop()
    with pytest.raises(EngineError, match="stopping") as named:
        await module.enqueue("default", "f", {})
    assert named.value.code == "enqueue_error"
    for topic in ("known", "new"):
        with pytest.raises(EngineError, match="stopping") as on_topic:
            await services.call("enqueue", {"topic": topic, "data": 1})
        assert on_topic.value.code == "enqueue_error"
    assert "new" not in module._topics  # no consumer outlives the stop


@pytest.mark.parametrize(("function_id", "data"), [
    ("engine::queue::topic_stats", {"topic": "default"}),
    ("engine::queue::dlq_topics", {}),
    ("engine::queue::dlq_messages", {"topic": "default"}),
])
async def test_stats_and_dead_letter_reads_after_the_stop_are_refused_not_sent_to_a_closed_store(
    monkeypatch: pytest.MonkeyPatch, function_id: str, data: dict[str, Any],
) -> None:
    # Before: they went to the closed store, and the Redis store opened a new connection that nobody closed.
    store = Gated(MemoryQueueStore())
    monkeypatch.setattr(queue_module, "open_store", lambda settings: store)
    services = FakeServices()
    module = queue_module.QueueModule(services, {"queue_configs": {"default": {}}})
    await module.start()
    await module.stop()
    used: list[str] = []
    for name in ("counts", "dlq_page"):
        monkeypatch.setattr(store.inner, name, lambda *args, name=name: used.append(name))
    with pytest.raises(EngineError, match="the queue module is stopping") as refused:
        await services.call(function_id, data)
    assert refused.value.code == "invocation_stopped"
    assert used == []


@pytest.mark.parametrize(
    ("write", "call"),
    [
        ("push", lambda services: services.call("enqueue", {"topic": "t", "data": 1})),
        ("push", lambda services: services.named_queues.enqueue("default", "f", {})),
        ("redrive", lambda services: services.call("iii::queue::redrive", {"queue": "default"})),
        ("redrive", lambda services: services.call("iii::queue::redrive_message",
                                                   {"queue": "default", "message_id": LETTER.id})),
        ("discard", lambda services: services.call("iii::queue::discard_message",
                                                   {"queue": "default", "message_id": LETTER.id})),
        ("counts", lambda services: services.call("engine::queue::topic_stats", {"topic": "default"})),
        ("counts", lambda services: services.call("engine::queue::dlq_topics", {})),
        ("dlq_page", lambda services: services.call("engine::queue::dlq_messages", {"topic": "default"})),
    ],
    ids=["enqueue", "enqueue_action", "redrive", "redrive_message", "discard_message", "topic_stats", "dlq_topics",
         "dlq_messages"],
)
async def test_a_store_write_under_way_at_the_stop_ends_before_the_store_closes(
    monkeypatch: pytest.MonkeyPatch, write: str, call: Callable[[FakeServices], Awaitable[Any]],
) -> None:
    store = Gated(MemoryQueueStore())
    gate = store.gate(write)
    closed: list[list[str]] = []

    async def close() -> None:
        closed.append(list(store.calls))

    monkeypatch.setattr(queue_module, "open_store", lambda settings: store)
    services = FakeServices()
    module = queue_module.QueueModule(services, {"queue_configs": {"default": {}}})
    await module.start()
    monkeypatch.setattr(store.inner, "close", close)
    await store.inner.push("__fn_queue::default", LETTER)
    assert await store.inner.claim("__fn_queue::default", now_ms=0, lease_ms=60_000) == LETTER
    await store.inner.dead("__fn_queue::default", DeadLetter(LETTER, "function call failed", 1))
    await services.trigger("queue", "t1", "f", {"topic": "t"})
    writing = asyncio.create_task(call(services))
    await asyncio.wait_for(store.entered[write].wait(), WAIT)
    stopping = asyncio.create_task(module.stop())
    # The store answers once every consumer loop has ended (a stop that does not wait has closed it by then).
    loops = [c._loop_task for c in [*module._named.values(), *(t.consumer for t in module._topics.values())]]
    await asyncio.wait({task for task in loops if task is not None}, timeout=WAIT)
    gate.set()
    await asyncio.wait_for(stopping, WAIT)
    await writing
    assert len(closed) == 1 and closed[0] and set(closed[0]) == {write}  # dlq_topics reads every queue's counts


async def test_a_store_write_that_hangs_does_not_hold_the_module_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    store = Gated(MemoryQueueStore())
    store.gate("push")  # never opened
    monkeypatch.setattr(queue_module, "open_store", lambda settings: store)
    services = FakeServices()
    module = queue_module.QueueModule(services, {"queue_configs": {"default": {}}, "stop_timeout_ms": 100})
    await module.start()
    enqueue = asyncio.create_task(module.enqueue("default", "f", {}))
    await asyncio.wait_for(store.entered["push"].wait(), WAIT)
    with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.module"):
        await asyncio.wait_for(module.stop(), WAIT)
    assert [r.getMessage() for r in caplog.records if r.name == "iii_engine.modules.queue.module"] == [
        "queue module: 1 store operation(s) (enqueue, redrive, discard, stats) still under way after the stop's "
        "100 ms; closing the store under them"]
    enqueue.cancel()


async def test_the_module_stop_is_bounded_once_by_stop_timeout_ms_not_once_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: the consumers' wait and the store operations' wait each had the whole bound, one after the other.
    store = Gated(MemoryQueueStore())
    store.gate("claim_next")  # never opened: the consumer loop never ends its store call
    store.gate("push")  # never opened: an enqueue stays under way
    monkeypatch.setattr(queue_module, "open_store", lambda settings: store)
    services = FakeServices()
    module = queue_module.QueueModule(services, {"queue_configs": {"default": {}}, "stop_timeout_ms": 1000})
    await module.start()
    await asyncio.wait_for(store.entered["claim_next"].wait(), WAIT)
    enqueue = asyncio.create_task(module.enqueue("default", "f", {}))
    await asyncio.wait_for(store.entered["push"].wait(), WAIT)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(module.stop(), WAIT)
    assert 0.9 <= loop.time() - began < 1.7  # one bound (1 s), with room for a busy machine; two would be 2 s
    enqueue.cancel()


# -- a dead-letter move cut short ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_a_redis_dead_letter_move_cut_short_after_any_reply_leaves_the_job_in_exactly_one_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis.asyncio.connection import AbstractConnection

    from iii_engine.modules.queue.redis_store import RedisQueueStore

    prefix = f"test-{uuid.uuid4()}:"
    store = RedisQueueStore(require_redis(), key_prefix=prefix)
    original = AbstractConnection.read_response
    replies = {"left": 0}

    async def cut_after(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        finally:
            replies["left"] -= 1
            if replies["left"] == 0:  # the reply arrived; the caller is cancelled before it acts on it
                await self.disconnect(nowait=True)
                raise asyncio.CancelledError

    monkeypatch.setattr(AbstractConnection, "read_response", cut_after)
    cut = 0
    for n in range(1, 10):
        queue = f"{Q}{n}"
        await store.push(queue, Job.new(queue, "f", n))
        job = await store.claim(queue, now_ms=0, lease_ms=60_000)
        assert job is not None
        replies["left"] = n
        try:
            await store.dead(queue, DeadLetter(job, "function call failed", 1))
        except asyncio.CancelledError:
            cut += 1
        replies["left"] = 0
        counts = await store.counts(queue)
        assert counts in (QueueCounts(0, 0, 0, 1), QueueCounts(0, 1, 0, 0)), (n, counts)
    await store.close()
    await _drop_keys(prefix)
    assert cut  # the move was cut short at least once
