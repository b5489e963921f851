"""A queue topic's consumer, made inside the first enqueuer's call, charges none of that worker's
max_call_bytes_per_worker share once the call is over, in a real engine (with Redis).

Before, the consumer inherited the enqueuer's charge from the context for good: every job on the topic whose
function was the built-in ``publish`` charged the first enqueuer, with its frame's size, per delivery. A worker with
no call in flight held 3,600,688 bytes of another worker's jobs, and its own tiny publish was refused.
"""

from __future__ import annotations

import uuid

import pytest

from iii_engine import Engine
from iii_engine.config import config_from_mapping
from tests.polling import until

from .raw import RawWorker, counters_left

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_call_bytes_per_worker")]


async def test_jobs_a_topics_consumer_publishes_charge_nothing_to_the_worker_whose_enqueue_made_it() -> None:
    config = config_from_mapping({"host": "127.0.0.1", "port": 0, "max_call_bytes_per_worker": 3_000_000,
                                  "modules": [{"class": "modules::pubsub::PubSubModule"},
                                              {"class": "modules::queue::QueueModule"}]})
    jobs, topic = f"jobs-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    async with Engine(config=config) as engine:
        first = await RawWorker.connect(engine.url)
        # the first enqueue on the topic makes its consumer, inside this worker's call of a 1.2 MB frame
        made = await first.call("enqueue", {"topic": jobs, "data": {"topic": topic, "data": "pad" * 300_000}})
        assert "error" not in made, made
        subscriber = await RawWorker.connect(engine.url)
        await subscriber.register("slow::sub")
        await subscriber.send({"type": "registertrigger", "id": "sub-t", "trigger_type": "subscribe",
                               "function_id": "slow::sub", "config": {"topic": topic}})
        await subscriber.send({"type": "registertrigger", "id": "q-jobs", "trigger_type": "queue",
                               "function_id": "publish", "config": {"topic": jobs}})
        await subscriber.sync()
        served = await subscriber.serve_one()  # the first job's delivery (queued before the subscriber came)
        assert served["data"] == "pad" * 300_000
        other = await RawWorker.connect(engine.url)
        for _ in range(3):
            assert "error" not in await other.call("enqueue", {"topic": jobs, "data": {"topic": topic, "data": "s"}})
        await until(lambda: engine.fired_calls.in_flight == 3)  # three small deliveries the subscriber holds
        held = engine.workers[first.worker_id]
        await until(lambda: held.calls == 0)
        assert held.call_bytes == 0  # before: 3,600,688 (three deliveries of its 1.2 MB frame)
        assert engine.fired_calls.bytes_in_flight == 0  # the engine's own producer: no worker's call is running
        assert "error" not in await first.call("publish", {"topic": "elsewhere", "data": "x"})  # before: refused
        for _ in range(3):
            await subscriber.serve_one()
        await until(lambda: not counters_left(engine))
        for worker in (first, subscriber, other):
            await worker.close()
