"""A trigger type taken over by another worker goes back to the worker it was taken from when the taker leaves, as an
overwritten function does (E5); and a worker closing with 1009 is not logged as having sent too much.

Before: when the taker left, every trigger of the type waited (pending, unlisted) for a new registration of the type,
while the earlier owner, still connected, believed it served them; a worker whose own limit refused a message of the
engine was logged "worker … sent a message over max_message_size".
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
import websockets

from iii_engine import Engine
from iii_engine.registry import MAX_EARLIER_OWNERS
from tests.polling import until

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: trigger types owned by workers")]

TICK = {"type": "registertriggertype", "id": "tick", "description": "first's"}


async def _taken_over(engine: Engine) -> tuple[RawWorker, RawWorker, RawWorker]:
    first, taker, user = [await RawWorker.connect(engine.url) for _ in range(3)]
    await first.send(TICK)
    await first.sync()
    await user.send({"type": "registertrigger", "id": "t", "trigger_type": "tick", "function_id": "u::f",
                     "config": {"every": 1}})
    assert (await first.expect("registertrigger"))["id"] == "t"
    await taker.send({"type": "registertriggertype", "id": "tick", "description": "taker's"})
    assert (await first.expect("unregistertrigger"))["id"] == "t"
    assert (await taker.expect("registertrigger"))["id"] == "t"
    return first, taker, user


async def test_a_taken_type_goes_back_to_its_earlier_owner_when_the_taker_leaves(engine: Engine) -> None:
    first, taker, user = await _taken_over(engine)
    await _gone(engine, taker)
    # before: nothing came, the type was gone and "t" pending until "tick" was registered again
    again = await first.expect("registertrigger")
    assert (again["id"], again["config"]) == ("t", {"every": 1})
    entry = engine.registry.trigger_types["tick"]
    assert entry.owner == first.worker_id  # (with the type as it is now: the taker's description)
    listed = await user.result_of("engine::triggers::list", {})
    assert [trigger["id"] for trigger in listed["triggers"]] == ["t"]
    await user.send({"type": "unregistertrigger", "id": "t"})
    assert (await first.expect("unregistertrigger"))["id"] == "t"


async def test_an_earlier_owner_that_let_the_type_go_does_not_get_it_back(engine: Engine) -> None:
    first, taker, _ = await _taken_over(engine)
    await first.send({"type": "unregistertriggertype", "id": "tick"})
    await first.sync()
    await _gone(engine, taker)
    await first.nothing_for(0.2)
    assert "tick" not in engine.registry.trigger_types
    assert list(engine.registry.pending_triggers) == ["t"]


async def test_owners_taking_a_type_from_each_other_remember_each_other_once(engine: Engine) -> None:
    workers = [await RawWorker.connect(engine.url) for _ in range(MAX_EARLIER_OWNERS + 3)]
    for _ in range(3):
        for worker in workers:
            await worker.send({"type": "registertriggertype", "id": "tick", "description": worker.worker_id})
            await worker.sync()
    earlier = engine.registry.trigger_types["tick"].earlier
    assert len(earlier) == MAX_EARLIER_OWNERS
    assert list(earlier) == [w.worker_id for w in reversed(workers[-MAX_EARLIER_OWNERS - 1:-1])]
    for worker in reversed(workers[-3:]):  # the latest owners leave: it goes back down the line, each once
        await _gone(engine, worker)
    assert engine.registry.trigger_types["tick"].owner == workers[-4].worker_id


async def test_a_worker_closing_with_1009_is_not_logged_as_the_sender(engine: Engine,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    big = await RawWorker.connect(engine.url)
    await big.register("big::f", description="d" * 50_000)
    await big.sync()
    async with websockets.connect(engine.url, max_size=10_000, compression=None) as small:
        await small.recv()  # workerregistered
        await small.send(json.dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                                     "function_id": "engine::functions::list", "data": {}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await small.recv()
        assert closed.value.sent is not None and closed.value.sent.code == 1009  # our side refused the listing
    await until(lambda: len(engine.workers) == 1)
    said = [record.getMessage() for record in caplog.records if "1009" in record.getMessage()]
    # before: "worker … sent a message over max_message_size (4194304 bytes); closed with 1009"
    assert any("closed its connection with 1009: a message the engine sent it was over its own limit" in line
               for line in said), said
    assert not any("sent a message over max_message_size" in line for line in said), said


async def test_a_taken_type_goes_back_when_the_taker_lets_it_go(engine: Engine) -> None:
    first, taker, _ = await _taken_over(engine)
    await taker.send({"type": "unregistertriggertype", "id": "tick"})
    assert (await taker.expect("unregistertrigger"))["id"] == "t"
    # before: the type was gone and "t" pending while the first owner, still connected, believed it served it
    assert (await first.expect("registertrigger"))["id"] == "t"
    assert engine.registry.trigger_types["tick"].owner == first.worker_id


async def test_a_type_given_back_past_the_limits_says_so_and_waits(engine: Engine,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine")
    first, taker, _ = await _taken_over(engine)
    engine.limits.max_total_registration_bytes = 1  # full: nothing new fits
    await _gone(engine, taker)
    # held to the limits as a registration is (the worker's count and bytes), and the refusal says what happened:
    # before, "worker <first>: trigger type 'tick' (… bytes) refused", as if it had sent a registration
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "trigger type given back as its taker let it go, 'tick'" in refused[0], refused
    assert "tick" not in engine.registry.trigger_types and list(engine.registry.pending_triggers) == ["t"]
    await first.nothing_for(0.2)
