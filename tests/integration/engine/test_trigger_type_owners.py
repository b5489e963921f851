"""Trigger types owned by workers: what their owners are sent and when (attack report on the registry, F3-F6).

Each test fails on the engine before its fix; the numbers are in the commit messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: trigger types owned by workers")]

SMALL_OUTBOX = 1024 * 1024


@pytest.fixture
async def small_outbox() -> AsyncIterator[Engine]:
    """An engine whose workers may leave at most 1 MiB unread."""
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[],
                                          max_outbox_bytes=SMALL_OUTBOX)) as running:
        yield running


async def _register_big_triggers(user: RawWorker, count: int, size: int) -> None:
    blob = "x" * size
    for i in range(count):
        await user.send({"type": "registertrigger", "id": f"big-{i}", "trigger_type": "big", "function_id": "u::f",
                         "config": {"i": i, "blob": blob}})
    await user.sync()


async def test_a_replay_past_max_outbox_bytes_reaches_the_new_owner(small_outbox: Engine) -> None:
    user = await RawWorker.connect(small_outbox.url)
    await _register_big_triggers(user, 24, 100_000)  # 2.4 MB pending, the owner may leave 1 MiB unread
    owner = await RawWorker.connect(small_outbox.url)
    await owner.send({"type": "registertriggertype", "id": "big", "description": "d"})
    got = [(await owner.expect("registertrigger"))["config"]["i"] for _ in range(24)]
    assert got == list(range(24))
    await owner.sync()
    assert owner.worker_id in small_outbox.workers


async def test_triggers_registered_while_the_owner_does_not_read_wait_for_room(small_outbox: Engine) -> None:
    owner = await RawWorker.connect(small_outbox.url, max_queue=1)
    await owner.send({"type": "registertriggertype", "id": "big", "description": "d"})
    await owner.sync()
    user = await RawWorker.connect(small_outbox.url)
    # The owner reads nothing meanwhile: 12 MB against its 1 MiB, more than the socket buffers between them hold
    await _register_big_triggers(user, 40, 300_000)
    got = [(await owner.expect("registertrigger", wait=10))["config"]["i"] for _ in range(40)]
    assert got == list(range(40))
    await owner.sync()
    assert owner.worker_id in small_outbox.workers


async def test_a_type_taken_over_moves_its_triggers_away_from_the_old_owner(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    old, new, user = [await RawWorker.connect(engine.url) for _ in range(3)]
    await old.send({"type": "registertriggertype", "id": "tick", "description": "old's"})
    await old.sync()
    await user.send({"type": "registertrigger", "id": "t", "trigger_type": "tick", "function_id": "u::f",
                     "config": {}})
    assert (await old.expect("registertrigger"))["id"] == "t"
    await new.send({"type": "registertriggertype", "id": "tick", "description": "new's"})
    # the old owner lets go before the new one takes it: the trigger never fires at both
    assert await old.expect("unregistertrigger", wait=2) == {"type": "unregistertrigger", "id": "t",
                                                             "trigger_type": "tick"}
    assert (await new.expect("registertrigger"))["id"] == "t"
    await user.send({"type": "unregistertrigger", "id": "t"})
    assert (await new.expect("unregistertrigger"))["id"] == "t"
    await old.send({"type": "unregistertriggertype", "id": "tick"})
    await old.sync()
    await old.nothing_for(0.2)
    assert engine.registry.trigger_types["tick"].owner == new.worker_id
    assert f"which worker {new.worker_id} took over from it" in caplog.text


async def _listed(worker: RawWorker) -> list[str]:
    return [t["id"] for t in (await worker.result_of("engine::triggers::list", {}))["triggers"]]


async def test_a_refused_trigger_waits_and_an_unregistered_type_unbinds_its_triggers(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    owner, user = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    await owner.send({"type": "registertriggertype", "id": "picky", "description": "d"})
    await owner.sync()
    for trigger_id in ("bad", "ok"):
        await user.send({"type": "registertrigger", "id": trigger_id, "trigger_type": "picky", "function_id": "u::f",
                         "config": {}})
        await owner.expect("registertrigger", id=trigger_id)
    await owner.send({"type": "triggerregistrationresult", "id": "bad", "trigger_type": "picky", "function_id": "u::f",
                      "error": {"code": "trigger_registration_failed", "message": "I refuse"}})
    await owner.send({"type": "triggerregistrationresult", "id": "ok", "trigger_type": "picky",
                      "function_id": "u::f"})
    await owner.sync()
    assert await _listed(user) == ["ok"]  # the refused one is not listed active
    assert f"refused trigger bad of worker {user.worker_id}" in caplog.text
    # the owner lets the type go: it is told to unbind what it holds (not the one it refused)
    await owner.send({"type": "unregistertriggertype", "id": "picky"})
    assert await owner.expect("unregistertrigger", wait=2) == {"type": "unregistertrigger", "id": "ok",
                                                               "trigger_type": "picky"}
    await owner.sync()
    await owner.nothing_for(0.2)
    assert await _listed(user) == []
    # the next owner gets every trigger of the type, the refused one again too
    await user.send({"type": "registertrigger", "id": "new", "trigger_type": "picky", "function_id": "u::f",
                     "config": {}})
    await user.sync()
    owner2 = await RawWorker.connect(engine.url)
    await owner2.send({"type": "registertriggertype", "id": "picky", "description": "d"})
    assert sorted([(await owner2.expect("registertrigger"))["id"] for _ in range(3)]) == ["bad", "new", "ok"]
    await user.send({"type": "unregistertrigger", "id": "ok"})
    assert (await owner2.expect("unregistertrigger"))["id"] == "ok"
    assert sorted(await _listed(user)) == ["bad", "new"]


async def test_a_trigger_id_another_worker_replaced_comes_back_when_that_worker_goes(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    owner, mine, intruder = [await RawWorker.connect(engine.url) for _ in range(3)]
    await owner.send({"type": "registertriggertype", "id": "tick", "description": "d"})
    await owner.sync()
    await mine.send({"type": "registertrigger", "id": "t", "trigger_type": "tick", "function_id": "mine::f",
                     "config": {"topic": "news"}})
    assert (await owner.expect("registertrigger"))["config"] == {"topic": "news"}
    await intruder.send({"type": "registertrigger", "id": "t", "trigger_type": "tick", "function_id": "b::f",
                         "config": {"topic": "other"}})
    assert (await owner.expect("registertrigger"))["function_id"] == "b::f"  # last writer wins, as in production
    await _gone(engine, intruder)
    assert (await owner.expect("unregistertrigger"))["id"] == "t"
    back = await owner.expect("registertrigger", wait=2)
    assert (back["id"], back["function_id"], back["config"]) == ("t", "mine::f", {"topic": "news"})
    listed = (await mine.result_of("engine::triggers::list", {}))["triggers"]
    assert [(t["id"], t["function_id"]) for t in listed] == [("t", "mine::f")]
    assert f"worker {intruder.worker_id} replaced trigger t of worker {mine.worker_id}" in caplog.text
    # its registrant's own unregister still reaches the owner, and nothing else comes back
    await mine.send({"type": "unregistertrigger", "id": "t"})
    assert (await owner.expect("unregistertrigger"))["id"] == "t"
    await owner.sync()
    await owner.nothing_for(0.2)
    assert engine.registry.find_trigger("t") is None


async def test_an_unregister_of_a_replaced_trigger_leaves_the_replacement(engine: Engine) -> None:
    owner, first, second = [await RawWorker.connect(engine.url) for _ in range(3)]
    await owner.send({"type": "registertriggertype", "id": "tick", "description": "d"})
    for worker in (first, second):
        await worker.send({"type": "registertrigger", "id": "t", "trigger_type": "tick",
                           "function_id": f"{worker.worker_id}::f", "config": {}})
        await owner.expect("registertrigger")
    await first.send({"type": "unregistertrigger", "id": "t"})
    await first.sync()
    await _gone(engine, first)
    await owner.sync()
    await owner.nothing_for(0.2)
    assert engine.registry.triggers["t"].registrant == second.worker_id
    await _gone(engine, second)  # nothing of first's comes back
    assert (await owner.expect("unregistertrigger"))["id"] == "t"
    await owner.sync()
    await owner.nothing_for(0.2)
    assert engine.registry.find_trigger("t") is None
