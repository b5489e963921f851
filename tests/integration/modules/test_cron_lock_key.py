"""A cron trigger's ``lock_key`` (ours): replicas of one SDK worker on engines sharing Redis fire each tick once.

The lock is keyed by trigger id (production's behaviour, kept as the default), and the SDK gives every
``register_trigger`` a fresh uuid, so the same worker code on two engines sharing RedisCronAdapter fired every
tick twice ([2, 2, 2, 2] over 4 ticks). A ``lock_key`` in the config keys the lock instead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from module_worker import ModuleWorker
from test_cron_engine import engine_with
from test_engine_attack_cron import trigger_ids

from iii import III
from tests.polling import until
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("configures the cron module's lock adapters")]


Firing = tuple[str, float]  # (which handler, the tick's scheduled time)


def handler(kind: str, got: asyncio.Queue[Firing]) -> Any:
    async def tick(data: Any) -> None:
        await got.put((kind, datetime.fromisoformat(data["scheduled_time"]).timestamp()))
    return tick


async def firings_per_tick(got: asyncio.Queue[Firing], after: float, kinds: tuple[str, ...]) -> list[list[int]]:
    """Per kind, how many times each of the first three ticks after ``after`` fired (collected until a fourth
    tick began: the three before it are complete)."""
    firings: Counter[Firing] = Counter()
    while len({t for _, t in firings if t > after}) < 4:
        firings[await asyncio.wait_for(got.get(), 5)] += 1
    ticks = sorted({t for _, t in firings if t > after})[:3]
    return [[firings[kind, t] for t in ticks] for kind in kinds]


@pytest.mark.redis
async def test_sdk_replicas_on_two_engines_fire_each_tick_once_with_a_shared_lock_key() -> None:
    settings = {"adapter": {"class": "modules::cron::RedisCronAdapter",
                            "config": {"redis_url": require_redis(), "key_prefix": f"lock-key-{uuid.uuid4()}:"}}}
    got: asyncio.Queue[Firing] = asyncio.Queue()
    async with engine_with(settings) as one, engine_with(settings) as two:
        clients = [III(one.url), III(two.url)]
        try:
            for client in clients:  # the same worker code on each engine: the SDK makes each trigger id a uuid
                await client.connect_async()
                client.register_function("app::shared", handler("shared", got))
                client.register_function("app::plain", handler("plain", got))
                client.register_trigger({"type": "cron", "function_id": "app::shared",
                                         "config": {"expression": "* * * * * *", "lock_key": "nightly-report"}})
                client.register_trigger({"type": "cron", "function_id": "app::plain",
                                         "config": {"expression": "* * * * * *"}})
            crons: list[Any] = [one.module("cron"), two.module("cron")]
            await until(lambda: all(len(cron._schedules) == 2 for cron in crons))
            shared, plain = await firings_per_tick(got, time.time(), ("shared", "plain"))
        finally:
            for client in clients:
                await client.shutdown_async()
    # before: [2, 2, 2] for the shared one too (its lock_key ignored, each engine's trigger locked by its own uuid)
    assert shared == [1, 1, 1]
    # the default key is the trigger id: two registrations through the SDK never share a lock
    assert plain == [2, 2, 2]


async def test_triggers_sharing_a_lock_key_share_one_lock_and_bad_keys_are_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine")
    got: asyncio.Queue[Firing] = asyncio.Queue()
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("lk::a", handler("a", got))
        await worker.function("lk::b", handler("b", got))
        for trigger_id, lock_key in (("bad-type", 7), ("bad-empty", ""), ("bad-long", "k" * 1025),
                                     ("a", "k" * 1024), ("b", "k" * 1024)):
            await worker.trigger(trigger_id, "cron", f"lk::{trigger_id}" if len(trigger_id) == 1 else "lk::a",
                                 {"expression": "* * * * * *", "lock_key": lock_key})
        assert sorted(await trigger_ids(worker)) == ["a", "b"]
        a, b = await firings_per_tick(got, time.time(), ("a", "b"))
    # two unrelated triggers given one lock key share its lock: each tick fires one of them, the other loses it
    assert [x + y for x, y in zip(a, b, strict=True)] == [1, 1, 1]
    rejected = [r.getMessage() for r in caplog.records if "invalid_trigger_config" in r.getMessage()]
    assert len(rejected) == 3, rejected
    assert "cron trigger bad-type: 'lock_key' must be a string, got int 7" in rejected[0]
    assert "cron trigger bad-empty: 'lock_key' must not be empty" in rejected[1]
    assert "cron trigger bad-long: 'lock_key' is 1025 characters long, at most 1024" in rejected[2]


@pytest.mark.parametrize("adapter", ["kv", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_lock_key_naming_another_triggers_id_does_not_take_its_ticks(adapter: str) -> None:
    # Before: a lock_key and a trigger id were one key space (cron_lock:<x> in Redis, one table in process), so a
    # worker naming another trigger's id as its lock_key took that trigger's lock: each tick fired only one of the
    # two ([1, 1, 1] between them, the victim losing some of its ticks).
    prefix = f"lock-space-{uuid.uuid4()}:"
    settings: dict[str, Any] = {} if adapter == "kv" else {"adapter": {
        "class": "modules::cron::RedisCronAdapter", "config": {"redis_url": require_redis(), "key_prefix": prefix}}}
    victim = f"victim-{uuid.uuid4()}"
    got: asyncio.Queue[Firing] = asyncio.Queue()
    async with engine_with(settings) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("space::victim", handler("victim", got))
        await worker.function("space::thief", handler("thief", got))
        await worker.trigger(victim, "cron", "space::victim", {"expression": "* * * * * *"})
        await worker.trigger("thief", "cron", "space::thief", {"expression": "* * * * * *", "lock_key": victim})
        await until(lambda: len(engine.module("cron")._schedules) == 2)  # type: ignore[union-attr]
        fired_victim, fired_thief = await firings_per_tick(got, time.time(), ("victim", "thief"))
    assert fired_victim == [1, 1, 1]
    assert fired_thief == [1, 1, 1]
    if adapter == "redis":
        from redis.asyncio import Redis

        redis = Redis.from_url(require_redis())
        try:
            # the trigger id's key is production's layout, unchanged; the lock_key's has a space of its own
            assert await redis.exists(f"{prefix}cron_lock:{victim}") == 1
            assert await redis.exists(f"{prefix}cron_lock_key:{victim}") == 1
            assert await redis.exists(f"{prefix}cron_lock:thief") == 0
        finally:
            await redis.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("missing", ["function", "condition"])
async def test_an_engine_that_cannot_deliver_a_tick_leaves_it_to_one_that_can(missing: str) -> None:
    settings = {"adapter": {"class": "modules::cron::RedisCronAdapter",
                            "config": {"redis_url": require_redis(), "key_prefix": f"lock-left-{uuid.uuid4()}:"}}}
    got: asyncio.Queue[Firing] = asyncio.Queue()
    trigger = {"type": "cron", "function_id": "app::report",
               "config": {"expression": "* * * * * *", "lock_key": "report", "condition_function_id": "app::when"}}
    async with engine_with(settings) as one, engine_with(settings) as two:
        restarting, serving = III(one.url), III(two.url)
        try:
            await restarting.connect_async()  # its trigger is registered, its function or condition not (yet)
            if missing == "condition":
                restarting.register_function("app::report", handler("report", got))
            restarting.register_trigger(trigger)
            await serving.connect_async()
            serving.register_function("app::report", handler("report", got))
            serving.register_function("app::when", lambda data: True)
            serving.register_trigger(trigger)
            crons: list[Any] = [one.module("cron"), two.module("cron")]
            await until(lambda: all(len(cron._schedules) == 1 for cron in crons))
            after = time.time()
            ticks: list[float] = []
            while len(ticks) < 5:
                _, tick = await asyncio.wait_for(got.get(), 5)
                if tick > after:
                    ticks.append(tick)
            await restarting.shutdown_async()  # it leaves no more ticks: the ones it left are looked at, then none
            await until(lambda: not crons[0]._left_checks, within=5)
        finally:
            for client in (restarting, serving):
                await client.shutdown_async()
    # before: the engine with no worker for the function won about half the locks and logged those ticks "not made"
    assert [round(b - a) for a, b in itertools.pairwise(ticks)] == [1, 1, 1, 1], ticks
    assert crons[0].ticks_left >= 4 and crons[1].ticks_left == 0
    assert crons[0].ticks_lost == 0  # each was fired by the other engine: nothing to warn of


@pytest.mark.redis
async def test_a_tick_no_engine_sharing_the_lock_fires_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine")
    await _unserved_ticks("lock-lost", lambda cron: cron.ticks_lost >= 1)
    lost = [r.getMessage() for r in caplog.records if "fired by no engine" in r.getMessage()]
    assert len(lost) == 1 and "app::nobody" in lost[0], lost


@pytest.mark.redis
async def test_ticks_not_looked_at_and_ticks_fired_by_no_engine_are_warned_of_each_on_its_own(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from iii_engine.modules.cron import module as cron_module

    monkeypatch.setattr(cron_module, "MAX_LEFT_CHECKS", 1)  # the second tick left waits for no look: unchecked
    caplog.set_level(logging.WARNING, logger="iii_engine")

    def lines(kind: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if kind in r.getMessage()]

    # before: the two kinds shared one rate-limited warning, so the first tick fired by no engine waited 10 s behind
    # an unchecked one's warning (or the stop), then named no tick
    await _unserved_ticks("lock-kinds", lambda _: bool(lines("not looked at")) and bool(lines("fired by no engine")))
    assert all("function app::nobody" in line for line in lines("fired by no engine"))
    assert all("function" not in line.split("latest:")[-1] for line in lines("not looked at"))


async def _unserved_ticks(prefix: str, done: Callable[[Any], bool]) -> None:
    """An engine sharing a Redis cron lock (keys under ``prefix``) with a trigger every second for a function no
    worker serves, until ``done(its cron module)`` (at most 8 s)."""
    settings = {"adapter": {"class": "modules::cron::RedisCronAdapter",
                            "config": {"redis_url": require_redis(), "key_prefix": f"{prefix}-{uuid.uuid4()}:"}}}
    async with engine_with(settings) as one:
        client = III(one.url)
        try:
            await client.connect_async()
            client.register_trigger({"type": "cron", "function_id": "app::nobody",
                                     "config": {"expression": "* * * * * *", "lock_key": "nobody"}})
            cron: Any = one.module("cron")
            await until(lambda: done(cron), within=8)
        finally:
            await client.shutdown_async()
