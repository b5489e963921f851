"""Ticks a stall passed over are counted exactly, however many (by arithmetic, not by walking each tick).

Before: ``CronModule`` walked the missed ticks one by one and stopped at 1,000, so a long stall of an every-second
schedule was reported as "at least 1000" skipped ticks and ``missed_ticks`` undercounted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_services import FakeServices, ShiftedClock, started

from iii.iii_types import TriggerInfo
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from iii_engine.modules.cron.expr import CronExpression

pytestmark = pytest.mark.timeout(20)


def walked(expression: CronExpression, after: datetime, until: datetime) -> int | None:
    """The ticks in the span, one by one; ``None`` past 3,000 (too slow to walk in a test)."""
    count, tick = 0, expression.next_after(after)
    while tick is not None and tick <= until:
        if count == 3_000:
            return None
        count, tick = count + 1, expression.next_after(tick)
    return count


@pytest.mark.parametrize("source", ["* * * * * *", "*/7 */13 * * * *", "0 0 12 * * MON-FRI", "0 0 0 29 2 *",
                                    "30 5/20 * * * ?", "0 0 0 31 * *", "* * 23 * * 0", "5 */2 1-3 * JAN,jul *",
                                    "0 0 0 13 * 5", "0 0 0 1 1 * 2030"])
def test_the_count_agrees_with_walking_the_ticks(source: str) -> None:
    expression = CronExpression.parse(source)
    draw = random.Random(source)
    compared = 0
    for _ in range(40):
        after = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=draw.randrange(3 * 365 * 86_400),
                                                             microseconds=draw.randrange(1_000_000))
        until = after + timedelta(seconds=draw.choice([0, 1, 59, 3_600, 90_000, 40 * 86_400]) * draw.random())
        expected = walked(expression, after, until)
        if expected is not None:
            assert expression.count_between(after, until) == expected, (after, until)
            compared += 1
    assert compared >= 10
    assert expression.count_between(after, after - timedelta(days=1)) == 0  # an empty span


def test_a_130_year_span_of_an_every_second_schedule_is_counted_at_once() -> None:
    expression = CronExpression.parse("* * * * * *")
    started = time.perf_counter()
    count = expression.count_between(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert time.perf_counter() - started < 0.5  # ~10 ms; walking the ticks would take days
    assert count == int((datetime(2101, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) - 1


async def test_a_stall_past_more_than_1000_ticks_counts_every_one(
        services: FakeServices, cron: CronModule, wall_clock: type[ShiftedClock],
        caplog: pytest.LogCaptureFixture) -> None:
    fired: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(data: Any) -> None:
        if fired.empty():
            wall_clock.offset = timedelta(hours=2)  # two hours pass between this tick and the next
        await fired.put(data)

    services.add("tick", handler)
    with caplog.at_level(logging.WARNING, logger=cron_module.__name__):
        await services.trigger("cron", "stalled", "tick", {"expression": "* * * * * *"})
        for _ in range(3):
            await asyncio.wait_for(fired.get(), 6)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == cron_module.__name__]
    late = re.search(r"late for tick (\S+); (\d+) tick\(s\) up to (\S+) skipped", warning)
    assert late is not None, warning
    last, now = datetime.fromisoformat(late[1]), datetime.fromisoformat(late[3])
    # the wall clock stepped over tick `last` too (it is skipped with those after it, as the clock's doing)
    assert int(late[2]) == cron.missed_ticks == int((now.replace(microsecond=0) - last).total_seconds()) + 1
    assert cron.missed_ticks > 7_000


async def test_the_module_counts_a_day_missed_by_a_minute_schedule_exactly() -> None:
    module = CronModule(FakeServices(), {})
    expression = CronExpression.parse("0 * * * * *")
    last = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    module._skip_missed(a_trigger(), expression, last, last + timedelta(days=1, seconds=30))
    assert module.missed_ticks == 1_440


def a_trigger() -> TriggerInfo:
    return TriggerInfo(id="c", trigger_type="cron", function_id="f", config={})


async def test_two_registers_of_one_trigger_at_once_leave_one_schedule_that_stop_ends(services: FakeServices) -> None:
    # before: each register waited for the old schedule's end and then stored its own; the first to store was
    # overwritten by the second, and its schedule ran on, firing every tick, past unregister and stop
    info = TriggerInfo(id="c", trigger_type="cron", function_id="f", config={"expression": "0 0 0 1 1 *"})
    async with started(CronModule(services, {})) as module:
        await module.register(info)
        await asyncio.gather(module.register(info), module.register(info), module.register(info))
        running = [t for t in asyncio.all_tasks() if t.get_name() == "cron:c" and not t.done()]
        assert running == [module._schedules["c"]]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "cron:c" and not t.done()]
