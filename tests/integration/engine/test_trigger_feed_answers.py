"""A trigger type owner's feed and answers (attack report on worker-owned trigger types, faults 1, 2, 4, 5): the feed
holds at most what the registry keeps while its owner reads nothing, a refusal never parks a registration the
owner accepted, and the owner's refusals and garbage answers cost a few log lines.

Each test fails on the engine before its fix; the numbers are in the commit message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig
from iii_engine.engine import UNDECODABLE_LOG_BURST

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: trigger types owned by workers")]


@pytest.fixture
async def small_outbox() -> AsyncIterator[Engine]:
    """An engine whose workers may leave at most 1 MiB unread."""
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[],
                                          max_outbox_bytes=1024 * 1024)) as running:
        yield running


async def _stalled_owner(engine: Engine, user: RawWorker) -> RawWorker:
    """An owner of type ``X`` that reads nothing, its outbox and socket buffers full of 12 MB of triggers."""
    owner = await RawWorker.connect(engine.url, max_queue=1)
    await owner.send({"type": "registertriggertype", "id": "X", "description": "d"})
    await owner.sync()
    for i in range(40):
        await user.send({"type": "registertrigger", "id": f"big{i}", "trigger_type": "X", "function_id": "u::f",
                         "config": {"pad": "p" * 300_000}})
    await user.sync()
    return owner


def _queued(engine: Engine, owner: RawWorker) -> int:
    return len(engine._feeds[owner.worker_id]._queue)


async def test_a_stalled_owners_feed_holds_one_item_per_trigger(small_outbox: Engine) -> None:
    user = await RawWorker.connect(small_outbox.url)
    owner = await _stalled_owner(small_outbox, user)
    for i in range(100):
        await user.send({"type": "registertrigger", "id": f"t{i}", "trigger_type": "X", "function_id": "u::f",
                         "config": {}})
    for _ in range(30):  # the owner's own type again: a replay of every trigger each time
        await owner.send({"type": "registertriggertype", "id": "X", "description": "d"})
    for i in range(300):  # one id registered again and again, another registered and unregistered
        await user.send({"type": "registertrigger", "id": "same", "trigger_type": "X", "function_id": "u::f",
                         "config": {"i": i}})
        await user.send({"type": "registertrigger", "id": "churn", "trigger_type": "X", "function_id": "u::f",
                         "config": {"i": i}})
        await user.send({"type": "unregistertrigger", "id": "churn"})
    await user.sync()
    # before: 3,940 items (each replay and re-registration queued again; stale ones dropped only at the head)
    assert _queued(small_outbox, owner) <= 2 * (40 + 100 + 2)
    got: dict[str, Any] = {}
    while "same" not in got or got["same"]["i"] != 299:
        frame = await owner.recv(10)
        if frame["type"] == "registertrigger":
            got[frame["id"]] = frame["config"]
        elif frame["type"] == "unregistertrigger":
            got.pop(frame["id"], None)
    await owner.sync()
    assert "churn" not in got and {f"t{i}" for i in range(100)} <= set(got)
    assert owner.worker_id in small_outbox.workers


async def _listed(worker: RawWorker) -> list[str]:
    return [t["id"] for t in (await worker.result_of("engine::triggers::list", {}))["triggers"]]


@pytest.mark.parametrize("order", ["unregistered between, answers in order", "answers out of order"])
async def test_a_refusal_of_an_earlier_registration_never_parks_an_accepted_one(engine: Engine, order: str) -> None:
    owner, user = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    await owner.send({"type": "registertriggertype", "id": "picky", "description": "d"})
    await owner.sync()
    register = {"type": "registertrigger", "id": "t", "trigger_type": "picky", "function_id": "u::f"}
    await user.send({**register, "config": {"v": 1}})
    await owner.expect("registertrigger")
    in_order = order.startswith("unregistered")
    if in_order:
        await user.send({"type": "unregistertrigger", "id": "t"})
        await owner.expect("unregistertrigger")
    await user.send({**register, "config": {"v": 2}})
    assert (await owner.expect("registertrigger"))["config"] == {"v": 2}
    accepted = {"type": "triggerregistrationresult", "id": "t", "trigger_type": "picky", "function_id": "u::f"}
    refused = {**accepted, "error": {"code": "bad", "message": "v1 refused"}}
    for answer in ([refused, accepted] if in_order else [accepted, refused]):  # the owner holds v2 either way
        await owner.send(answer)
    await owner.sync()
    # before: [] (v2 parked by v1's refusal), and the owner was never told to drop it
    assert await _listed(user) == ["t"]
    await user.send({"type": "unregistertrigger", "id": "t"})
    assert (await owner.expect("unregistertrigger"))["id"] == "t"


async def test_a_refusing_owner_and_its_garbage_answers_cost_a_few_lines(engine: Engine,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    n = 300
    user = await RawWorker.connect(engine.url)
    for i in range(n):
        await user.send({"type": "registertrigger", "id": f"t{i}", "trigger_type": "X", "function_id": "u::f",
                         "config": {}})
    await user.sync()
    owner = await RawWorker.connect(engine.url)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iii_engine"):
        for _ in range(2):
            await owner.send({"type": "registertriggertype", "id": "X", "description": "d"})
            for _ in range(n):
                frame = await owner.expect("registertrigger")
                await owner.send({"type": "triggerregistrationresult", "id": frame["id"], "trigger_type": "X",
                                  "function_id": "u::f", "error": {"code": "no", "message": "I refuse everything"}})
            await owner.sync()
        assert len(engine.registry.pending_triggers) == n
        for i in range(n):
            await owner.send({"type": "triggerregistrationresult", "id": "g" * 100_000 + str(i), "trigger_type": "X",
                              "function_id": "u::f", "error": "x" * 100_000})
        await owner.sync()
    lines = [record.getMessage() for record in caplog.records]
    # before: 1,500 lines (a refusal and an activation per trigger and round, a line per garbage answer), 60 MB
    assert len(lines) <= 4 * (UNDECODABLE_LOG_BURST + 2), len(lines)
    assert max(map(len, lines)) < 2_000
