"""Cron expressions, the payload and the one-firing-per-tick lock (in-process and on a real Redis)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_services import FakeServices

from iii_engine.modules.base import EngineError
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron.expr import CronExpression, CronSyntaxError, rfc3339
from iii_engine.modules.cron.locks import KvCronLock, RedisCronLock

REDIS_URL = "redis://127.0.0.1:6379/0"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6})?\+00:00$")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * * *", at(2024, 1, 1, 0, 0, 0), at(2024, 1, 1, 0, 0, 1)),
        ("*/15 * * * * *", at(2024, 1, 1, 0, 0, 59), at(2024, 1, 1, 0, 1, 0)),
        ("0 0 12 * * MON-FRI", at(2024, 6, 1, 13, 0, 0), at(2024, 6, 3, 12, 0, 0)),  # Sat → Mon
        ("0 0 0 1 JAN,jul *", at(2024, 2, 1), at(2024, 7, 1)),
        ("0 0 0 29 2 * *", at(2024, 3, 1), at(2028, 2, 29)),
        ("0 0 0 * * 0", at(2024, 6, 3), at(2024, 6, 9)),  # Sunday = 0
        ("0 0 0 * * 7", at(2024, 6, 3), at(2024, 6, 9)),  # 7 = Sunday too
        ("30 5/20 * * * ?", at(2024, 1, 1, 0, 6, 0), at(2024, 1, 1, 0, 25, 30)),
        ("0 0 0 1 1 * 2030", at(2024, 1, 1), at(2030, 1, 1)),
        ("@hourly", at(2024, 1, 1, 5, 0, 0), at(2024, 1, 1, 6, 0, 0)),
    ],
)
def test_next_after(expression: str, after: datetime, expected: datetime) -> None:
    assert CronExpression.parse(expression).next_after(after) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * * *", "expected 6 or 7 fields"),
        ("60 * * * * *", "seconds: 60 is outside 0-59"),
        ("* * 24 * * *", "hours"),
        ("* * * * FOO *", "month: 'FOO' is not a number"),
        ("*/0 * * * * *", "bad step"),
        ("* * * 5-1 * *", "runs backwards"),
        ("0 0 0 1 1 * 2000", "never fires"),
        ("1,,2 * * * * *", "empty list item"),
    ],
)
def test_bad_expressions_name_the_problem(expression: str, message: str) -> None:
    with pytest.raises(CronSyntaxError, match=re.escape(message)):
        CronExpression.parse(expression)


def test_rfc3339_matches_chrono_format() -> None:
    assert rfc3339(at(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05+00:00"
    assert rfc3339(datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == "2024-01-02T03:04:05.120+00:00"
    assert rfc3339(datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)) == "2024-01-02T03:04:05.123456+00:00"


async def test_kv_lock_fires_each_tick_once() -> None:
    lock = KvCronLock()
    assert await lock.try_fire("job", 1000)
    assert not await lock.try_fire("job", 1000)
    assert await lock.try_fire("job", 2000)
    assert await lock.try_fire("other", 1000)


@pytest.mark.redis
async def test_redis_lock_shared_by_two_engines_fires_once() -> None:
    prefix = f"test-{uuid.uuid4()}:"
    a, b = RedisCronLock(REDIS_URL, key_prefix=prefix), RedisCronLock(REDIS_URL, key_prefix=prefix)
    try:
        wins = await asyncio.gather(*(lock.try_fire("job", 5000) for lock in (a, b, a, b)))
        assert sum(wins) == 1
        assert await b.try_fire("job", 6000)
        assert not await a.try_fire("job", 5000)  # a late engine never re-fires an older tick
    finally:
        await a.close()
        await b.close()


async def test_module_rejects_bad_trigger_configs(services: FakeServices, cron: CronModule) -> None:
    for config in ({}, {"expression": ""}, {"expression": "* * *"}, None):
        with pytest.raises(EngineError) as rejected:
            await services.trigger("cron", "c", "f", config)
        assert rejected.value.code == "invalid_cron_expression"


async def test_every_second_schedule_fires_with_the_production_payload(
        services: FakeServices, cron: CronModule) -> None:
    fired = services.queue_calls("tick")

    async def skip_all(data: Any) -> bool:
        return False

    services.add("never", skip_all)
    trigger = await services.trigger("cron", "every-second", "tick", {"expression": "* * * * * *"})
    await services.trigger("cron", "skipped", "tick", {"expression": "* * * * * *", "condition_function_id": "never"})
    first = await asyncio.wait_for(fired.get(), 3)
    second = await asyncio.wait_for(fired.get(), 3)
    assert set(first) == {"trigger", "job_id", "scheduled_time", "actual_time"}
    assert first["trigger"] == "cron" and first["job_id"] == "every-second"
    assert RFC3339.match(first["scheduled_time"]) and RFC3339.match(first["actual_time"])
    assert "." not in first["scheduled_time"]  # ticks are whole seconds
    assert first["actual_time"] >= first["scheduled_time"]
    t1 = datetime.fromisoformat(first["scheduled_time"])
    t2 = datetime.fromisoformat(second["scheduled_time"])
    assert (t2 - t1).total_seconds() == 1
    assert second["job_id"] == "every-second"  # the skipped trigger never fired
    await cron.unregister(trigger)


async def test_ticks_a_stall_made_late_are_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Before: the ticks an engine stall passed over were dropped without a count or a word.
    services = FakeServices()
    module = CronModule(services, {})
    await module.start()
    fired: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(data: Any) -> None:
        if fired.empty() and not module.missed_ticks:
            # a blocking call on purpose: the engine's loop stalls, the next tick fires 1.5 s late, the one after is
            # passed over
            time.sleep(2.5)  # noqa: ASYNC251
        await fired.put(data)

    services.add("tick", handler)
    try:
        with caplog.at_level(logging.WARNING, logger="iii_engine.modules.cron.module"):
            await services.trigger("cron", "stalled", "tick", {"expression": "* * * * * *"})
            ticks = [datetime.fromisoformat((await asyncio.wait_for(fired.get(), 6))["scheduled_time"])
                     for _ in range(3)]
        assert module.missed_ticks >= 1
        assert max((b - a).total_seconds() for a, b in itertools.pairwise(ticks)) >= 2  # a gap, no burst
        warnings = [r.getMessage() for r in caplog.records if r.name == "iii_engine.modules.cron.module"]
        assert any(w.startswith("cron stalled: the engine stalled: ") and "tick(s) up to" in w for w in warnings)
    finally:
        await module.stop()


@pytest.mark.parametrize("names, numbers", [("FRI-SUN", "5-7"), ("sat-sun", "6,0"), ("MON-SUN/2", "1-7/2")])
def test_a_weekday_range_may_end_on_sunday_by_name(names: str, numbers: str) -> None:
    # before: "FRI-SUN" was refused as running backwards (Sunday is 0 as a name) while "5-7" was taken
    assert CronExpression.parse(f"0 0 0 * * {names}").weekdays == CronExpression.parse(f"0 0 0 * * {numbers}").weekdays


def test_a_weekday_range_starting_on_sunday_still_runs_forwards() -> None:
    assert CronExpression.parse("0 0 0 * * SUN-TUE").weekdays == frozenset({0, 1, 2})
    with pytest.raises(CronSyntaxError, match="runs backwards"):
        CronExpression.parse("0 0 0 * * 5-0")
