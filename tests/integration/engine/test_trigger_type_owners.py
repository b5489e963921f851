"""Trigger types owned by workers: what their owners are sent and when (attack report on the registry, F3-F6).

Each test fails on the engine before its fix; the numbers are in the commit messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig

from .raw import RawWorker

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
