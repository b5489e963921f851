"""A publish's fan-out bounded by its publisher's share (max_call_bytes_per_worker), in a real engine.

Before, the share was checked only before a worker's call: with a 1 MiB share and a 1 MiB max_fired_bytes, one
worker's single publish of 3 MB to 3 slow subscribers was delivered, its worker then held 9,000,435 bytes, and
another worker's tiny publish waited fire_wait_timeout_ms, then failed with fire_limit ("holding 9000435 bytes
(max_fired_bytes 1048576)"). Now the fan-out is refused at once, none of it delivered, and the others get room.
"""

from __future__ import annotations

import pytest

from iii_engine import Engine
from iii_engine.config import config_from_mapping
from tests.polling import until

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_call_bytes_per_worker")]

MIB = 1024 * 1024


def _engine(**limits: int) -> Engine:
    return Engine(config=config_from_mapping({"host": "127.0.0.1", "port": 0,
                                              "modules": [{"class": "modules::pubsub::PubSubModule"}], **limits}))


async def _slow_subscriber(url: str, name: str) -> RawWorker:
    """A subscriber of topic ``t`` that answers nothing until the test serves its calls."""
    subscriber = await RawWorker.connect(url)
    await subscriber.register(f"{name}::sub")
    await subscriber.send({"type": "registertrigger", "id": f"{name}-t", "trigger_type": "subscribe",
                           "function_id": f"{name}::sub", "config": {"topic": "t"}})
    await subscriber.sync()
    return subscriber


async def test_a_publish_whose_fan_out_is_past_the_share_is_refused_and_others_still_publish() -> None:
    async with _engine(max_call_bytes_per_worker=MIB, max_fired_bytes=MIB, fire_wait_timeout_ms=1000) as engine:
        subscribers = [await _slow_subscriber(engine.url, f"s{i}") for i in range(3)]
        publisher = await RawWorker.connect(engine.url)
        big = await publisher.call("publish", {"topic": "t", "data": "y" * 3_000_000})
        assert big["error"]["code"] == "fire_limit", big
        assert big["error"]["message"].startswith("publish to topic 't': none of its 3 subscribers reached: ")
        assert big["error"]["message"].endswith(f"(max_call_bytes_per_worker {MIB})")
        fired = engine.fired_calls
        # never half delivered: nothing in flight, nothing held
        assert (fired.in_flight, fired.bytes_in_flight, engine.workers[publisher.worker_id].call_bytes) == (0, 0, 0)

        other = await RawWorker.connect(engine.url)
        small = await other.call("publish", {"topic": "t", "data": "small"})
        assert "error" not in small, small
        assert fired.in_flight == 3
        for subscriber in subscribers:
            await subscriber.serve_one()
        await until(lambda: fired.in_flight == 0)
        assert fired.bytes_in_flight == engine.worker_calls.stats(engine.workers.values())["bytes_in_flight"] == 0
        for worker in (*subscribers, publisher, other):
            await worker.close()


async def test_a_publisher_holds_at_most_its_share_and_is_told_so() -> None:
    async with _engine(max_call_bytes_per_worker=MIB) as engine:
        subscriber = await _slow_subscriber(engine.url, "slow")
        publisher = await RawWorker.connect(engine.url)
        fired = engine.fired_calls
        results = []
        for _ in range(6):
            results.append(await publisher.call("publish", {"topic": "t", "data": "x" * 200_000}))
            if "error" in results[-1]:
                break
        size = fired.bytes_in_flight // fired.in_flight  # each delivery holds the publish frame's size
        # refused once its deliveries, the publish frame and its delivery would be past the share (4 of 200 KB)
        assert fired.in_flight == 4 and (fired.in_flight + 2) * size > MIB >= (fired.in_flight + 1) * size
        refused = results[-1]["error"]
        assert refused["code"] == "fire_limit"
        assert refused["message"].endswith(
            f"holds {5 * size} bytes in calls in flight and the trigger-fired calls they set off, and these would "
            f"hold {size} more (max_call_bytes_per_worker {MIB})")
        held = engine.workers[publisher.worker_id]
        await until(lambda: held.calls == 0)
        assert held.call_bytes == fired.bytes_in_flight == 4 * size <= MIB
        # the publisher may still publish what fits its share
        assert "error" not in await publisher.call("publish", {"topic": "t", "data": "small"})
        for _ in range(5):
            await subscriber.serve_one()
        await until(lambda: fired.in_flight == 0)
        assert (fired.bytes_in_flight, held.call_bytes) == (0, 0)
        for worker in (subscriber, publisher):
            await worker.close()
