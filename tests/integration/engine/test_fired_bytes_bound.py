"""Trigger-fired calls and a worker's calls bounded in bytes (max_call_bytes_per_worker, max_fired_bytes), in a real
engine.

Before, only counts bounded them (10,000 fired calls, 10,000 calls per worker): void publishes of 200 KB into a
subscriber slower than its publisher grew the engine by about 200 KB each (45 to 794 MiB in 17 s), since every
delivery held its payload until the subscriber answered. Now the publisher is refused (counted, logged) before its
deliveries would take it past its share, and a publish that finds the engine-wide byte budget full waits its turn,
then fails with ``fire_limit`` naming it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine
from iii_engine.config import config_from_mapping
from tests.polling import until

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_call_bytes_per_worker and max_fired_bytes")]

PAYLOAD = "x" * 200_000
FLOOD = 40


def _engine(**limits: int) -> Engine:
    # from a mapping, as a configuration file is read: an engine that does not know a key ignores it
    return Engine(config=config_from_mapping({"host": "127.0.0.1", "port": 0,
                                              "modules": [{"class": "modules::pubsub::PubSubModule"}], **limits}))


def _void_publish(data: str) -> str:
    return json.dumps({"type": "invokefunction", "function_id": "publish", "data": {"topic": "t", "data": data},
                       "action": {"type": "void"}})


async def _slow_subscriber(url: str) -> RawWorker:
    """A subscriber of topic ``t`` that answers nothing until the test serves its calls."""
    subscriber = await RawWorker.connect(url)
    await subscriber.register("slow::sub")
    await subscriber.send({"type": "registertrigger", "id": "sub-t", "trigger_type": "subscribe",
                           "function_id": "slow::sub", "config": {"topic": "t"}})
    await subscriber.sync()
    return subscriber


async def test_a_void_publish_flood_into_a_slow_subscriber_holds_at_most_the_publishers_share() -> None:
    share = 2 * 1024 * 1024
    frame = _void_publish(PAYLOAD)
    size = len(frame.encode())
    async with _engine(max_call_bytes_per_worker=share) as engine:
        subscriber = await _slow_subscriber(engine.url)
        publisher = await RawWorker.connect(engine.url)
        for _ in range(FLOOD):
            await publisher.send_raw(frame)
        await publisher.sync()
        flooder = engine.workers[publisher.worker_id]
        await until(lambda: flooder.calls == 0)  # every publish admitted has run
        fired = engine.fired_calls
        # each delivery holds the publish frame's size, and never more than the share (a publish's own frame and its
        # delivery had to fit it too); how many fit depends on how many frames were read before their calls ran
        assert fired.bytes_in_flight == flooder.call_bytes == fired.in_flight * size <= share, fired.stats()
        # none dropped silently: refused before the call (too_many_calls) or at its fan-out (fire_limit)
        assert engine.worker_calls.refused_void + fired.refused == FLOOD - fired.in_flight

        # another worker's publish gets room
        other = await RawWorker.connect(engine.url)
        answered = await other.call("publish", {"topic": "t", "data": "small"})
        assert "error" not in answered, answered

        # the subscriber answers: every byte comes back, and the publisher may publish again
        for _ in range(fired.in_flight):
            await subscriber.serve_one()
        await until(lambda: fired.in_flight == 0)
        assert (fired.bytes_in_flight, flooder.call_bytes, engine.workers[other.worker_id].call_bytes) == (0, 0, 0)
        assert "error" not in await publisher.call("publish", {"topic": "t", "data": "after"})
        for worker in (subscriber, publisher, other):
            await worker.close()


async def test_a_publish_past_max_fired_bytes_waits_then_fails_with_fire_limit_naming_it() -> None:
    budget = 1024 * 1024
    async with _engine(max_fired_bytes=budget, fire_wait_timeout_ms=300) as engine:
        subscriber = await _slow_subscriber(engine.url)
        publisher = await RawWorker.connect(engine.url)
        results = [await publisher.call("publish", {"topic": "t", "data": PAYLOAD}) for _ in range(6)]
        assert all("error" not in result for result in results[:5]), results[:5]
        assert results[5]["error"]["code"] == "fire_limit"
        assert results[5]["error"]["message"].endswith(f"(max_fired_bytes {budget})")
        assert engine.fired_calls.in_flight == 5 and engine.fired_calls.bytes_in_flight <= budget
        # a small publish still fits under the budget
        other = await RawWorker.connect(engine.url)
        assert "error" not in await other.call("publish", {"topic": "t", "data": "small"})
        for _ in range(6):
            await subscriber.serve_one()
        await until(lambda: engine.fired_calls.in_flight == 0)
        assert engine.fired_calls.bytes_in_flight == 0
        for worker in (subscriber, publisher, other):
            await worker.close()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_an_engine_process_flooded_with_void_publishes_stays_small(
        engine_process: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    # a share of 8 MiB: the flood is then over it 12 times, and quickly sent
    config.write_text("max_call_bytes_per_worker: 8388608\nmodules:\n  - class: modules::pubsub::PubSubModule\n")
    proc = await engine_process("--config", str(config), "--port", "0")
    subscriber = await _slow_subscriber(proc.url)
    publisher = await RawWorker.connect(proc.url)
    before = _rss_mib(proc.process.pid)
    frame = _void_publish(PAYLOAD)
    started = time.monotonic()
    for _ in range(500):  # 100 MB of payload: an engine holding every delivery grows by about as much
        await publisher.send_raw(frame)
    await publisher.sync()  # every publish is read (and parsed) by now
    grown = _rss_mib(proc.process.pid) - before
    print(f"500 publishes in {time.monotonic() - started:.1f} s, RSS {before:.0f} MiB + {grown:.0f} MiB")
    # the 8 MiB share and what the engine needs around it; loose: allocator and GC timing vary
    assert grown < 50, grown
    other = await RawWorker.connect(proc.url)
    assert "error" not in await other.call("publish", {"topic": "t", "data": "small"})
    for worker in (publisher, other):
        await worker.close()
    subscriber.ws.transport.abort()  # a close handshake would first read the megabytes it never served
