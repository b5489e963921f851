"""A subscriber whose function is the built-in ``publish`` (a chain: topic t1 -> topic t2) gives back every byte its
deliveries held, in a real engine.

Before, the delivery to the built-in ran the nested publish inline in the fired call's own task; its take recorded
"no bytes" over the outer take's record (the producer's call was over by then), so the outer release gave back
nothing: each round kept its frame's size on the publisher's share and on ``bytes_in_flight`` for good, until the
publisher's publishes were refused with ``fire_limit`` and, once it left, every other worker's publish waited and
failed.
"""

from __future__ import annotations

import uuid

import pytest

from iii_engine import Engine
from iii_engine.config import config_from_mapping
from tests.polling import until

from .raw import RawWorker, counters_left

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_call_bytes_per_worker")]


async def test_a_publish_chained_through_the_builtin_publish_gives_back_its_bytes() -> None:
    config = config_from_mapping({"host": "127.0.0.1", "port": 0, "max_call_bytes_per_worker": 3_000_000,
                                  "modules": [{"class": "modules::pubsub::PubSubModule"}]})
    t1, t2 = f"t1-{uuid.uuid4().hex}", f"t2-{uuid.uuid4().hex}"
    async with Engine(config=config) as engine:
        subscriber = await RawWorker.connect(engine.url)
        await subscriber.register("sub::t2")
        await subscriber.send({"type": "registertrigger", "id": "chain", "trigger_type": "subscribe",
                               "function_id": "publish", "config": {"topic": t1}})
        await subscriber.send({"type": "registertrigger", "id": "end", "trigger_type": "subscribe",
                               "function_id": "sub::t2", "config": {"topic": t2}})
        await subscriber.sync()
        publisher = await RawWorker.connect(engine.url)
        # 4 rounds of a 300 KB frame: before, 1.2 MB stayed held (the 11th round was refused with fire_limit)
        for _ in range(4):
            sent = await publisher.call("publish", {"topic": t1, "data": {"topic": t2, "data": "pad" * 100_000}})
            assert "error" not in sent, sent
            assert (await subscriber.serve_one())["data"] == "pad" * 100_000
            await until(lambda: engine.fired_calls.in_flight == 0)  # the chained delivery's outcome is in
            assert counters_left(engine) == {}  # before: {'<publisher>.call_bytes': 300237, 'bytes_in_flight': 300237}
        await publisher.close()
        await until(lambda: len(engine.workers) == 1)
        other = await RawWorker.connect(engine.url)  # before: waited 1 s, then refused (the publisher's bytes)
        assert "error" not in await other.call("publish", {"topic": t2, "data": "tiny"})
        await subscriber.serve_one()
        await until(lambda: not counters_left(engine))
        for worker in (subscriber, other):
            await worker.close()


async def test_a_state_trigger_whose_handler_is_a_builtin_that_fires_again_gives_back_its_bytes() -> None:
    # TriggerSet's handlers run inline in the task holding their slots: the built-in state::delete's own
    # state:deleted delivery took (for no bytes) in that task, and the release after it gave back nothing
    config = config_from_mapping({"host": "127.0.0.1", "port": 0, "max_call_bytes_per_worker": 3_000_000,
                                  "modules": [{"class": "modules::state::StateModule"}]})
    scope = f"s-{uuid.uuid4().hex}"
    async with Engine(config=config) as engine:
        owner = await RawWorker.connect(engine.url)
        await owner.send({"type": "registertrigger", "id": "drop", "trigger_type": "state",
                          "function_id": "state::delete", "config": {"scope": scope}})
        await owner.sync()
        writer = await RawWorker.connect(engine.url)
        for round_ in range(3):
            written = await writer.call("state::set", {"scope": scope, "key": f"k{round_}", "value": "pad" * 100_000})
            assert "error" not in written, written
            await until(lambda: engine.fired_calls.in_flight == 0)  # the delete and its own delivery are over
            assert counters_left(engine) == {}  # before: {'bytes_in_flight': 300195, '<writer>.call_bytes': 300195}
        for worker in (owner, writer):
            await worker.close()
