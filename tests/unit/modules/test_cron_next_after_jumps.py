"""``CronExpression.next_after`` jumps to each field's next listed value (carrying to the next larger field when
none is left) instead of stepping hour by hour, minute by minute and second by second.

Before, registering a trigger due once in 2099 cost ~0.5 ms of the engine's loop in ``next_after`` alone (twice: the
never-fires check of ``parse`` and the schedule's first tick), and a day no month has (``30 2``) walked every
February to 2100 (~1.5 ms): 20,000 registrations were answered after ~20 s. The differential test below holds the
new ``next_after`` to the old one, copied here as the oracle, on thousands of random expressions and instants.
"""

from __future__ import annotations

import calendar
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from types import FrameType
from typing import Any

import pytest

from iii_engine.modules.cron.expr import _FIELDS, _WEEKDAYS, MAX_YEAR, CronExpression, CronSyntaxError, _Field, _value


def oracle_next_after(expr: CronExpression, instant: datetime) -> datetime | None:
    """The stepping ``next_after`` of commit fbd16d12, as it was (with ``_day_matches`` and ``_next_day``)."""

    def start_of_next_month(moment: datetime) -> datetime:
        if moment.month == 12:
            return datetime(moment.year + 1, 1, 1, tzinfo=UTC)
        return datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)

    def day_matches(moment: datetime) -> bool:
        if moment.day not in expr.days:
            return False
        return (moment.weekday() + 1) % 7 in expr.weekdays

    def next_day(moment: datetime) -> datetime:
        day = expr.days.next_from(moment.day + 1)
        if day is not None and day <= calendar.monthrange(moment.year, moment.month)[1]:
            return datetime(moment.year, moment.month, day, tzinfo=UTC)
        return start_of_next_month(moment)

    moment = instant.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    while moment.year <= MAX_YEAR:
        if moment.year not in expr.years:
            later = [y for y in expr.years if y > moment.year]
            if not later:
                return None
            moment = datetime(min(later), 1, 1, tzinfo=UTC)
            continue
        if moment.month not in expr.months:
            moment = start_of_next_month(moment)
            continue
        if not day_matches(moment):
            moment = next_day(moment)
            continue
        if moment.hour not in expr.hours:
            moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
            continue
        if moment.minute not in expr.minutes:
            moment = moment.replace(second=0) + timedelta(minutes=1)
            continue
        if moment.second not in expr.seconds:
            moment += timedelta(seconds=1)
            continue
        return moment
    return None


def oracle_parse_field(spec: _Field, text: str) -> frozenset[int]:
    """The set-building ``_parse_field`` of commit fbd16d12 (now bits are set directly)."""
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronSyntaxError(f"{spec.name}: empty list item")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isascii() or not step_text.isdigit() or int(step_text) == 0:
                raise CronSyntaxError(f"{spec.name}: bad step")
            step = int(step_text)
        if base in ("*", "?"):
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(spec, first), _value(spec, last)
            if spec.names is _WEEKDAYS and last.upper() == "SUN" and low > high:
                high = 7
            if low > high:
                raise CronSyntaxError(f"{spec.name}: range runs backwards")
        else:
            low = _value(spec, base)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


def oracle_fields(text: str) -> list[frozenset[int]]:
    parts = text.split()
    if len(parts) == 6:
        parts.append("*")
    sets = [oracle_parse_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True)]
    sets[5] = frozenset(0 if d == 7 else d for d in sets[5])
    return sets


MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (low, high, names, values drawn more often: month ends, February, the years around leap days and 2100)
FIELDS: list[tuple[int, int, list[str] | None, list[int]]] = [
    (0, 59, None, [0, 59]),
    (0, 59, None, [0, 59]),
    (0, 23, None, [0, 23]),
    (1, 31, None, [1, 28, 29, 30, 31]),
    (1, 12, MONTHS, [2, 4, 12]),
    (0, 7, WEEKDAYS, [0, 6, 7]),
    (1970, 2100, None, [1970, 2000, 2024, 2026, 2028, 2099, 2100]),
]


def value_text(rng: random.Random, field: int) -> tuple[int, str]:
    low, high, names, favoured = FIELDS[field]
    value = rng.choice(favoured) if rng.random() < 0.4 else rng.randint(low, high)
    if field == 6 and rng.random() < 0.6:
        value = rng.randint(2024, 2040)  # years a start instant reaches
    if names is not None and rng.random() < 0.3 and value - (field == 4) < len(names):
        return value, rng.choice([str.upper, str.lower, str.title])(names[value - (field == 4)])
    return value, str(value)


def range_text(rng: random.Random, field: int) -> str:
    """``a-b`` with ``a <= b`` (by value: ``SUN-FRI``, never ``FRI-SUN``)."""
    low, high = sorted([value_text(rng, field), value_text(rng, field)])
    return f"{low[1]}-{high[1]}"


def part_text(rng: random.Random, field: int) -> str:
    low, high = FIELDS[field][:2]
    form = rng.randrange(6)
    if form == 0:
        return rng.choice(["*", "?"])
    if form == 1:
        return value_text(rng, field)[1]
    if form == 2:
        return range_text(rng, field)
    if form == 3:
        return f"*/{rng.randint(1, (high - low) + 2)}"
    if form == 4:
        return f"{value_text(rng, field)[1]}/{rng.randint(1, 40)}"
    return f"{range_text(rng, field)}/{rng.randint(1, 10)}"


def random_expression(rng: random.Random) -> str:
    fields = []
    for field in range(7):
        if field == 6 and rng.random() < 0.4:
            break  # six fields: any year
        dense = field in (3, 4, 5) and rng.random() < 0.35  # most real schedules leave the date fields open
        count = 1 if dense or rng.random() < 0.6 else rng.randint(2, 4)
        fields.append("*" if dense else ",".join(part_text(rng, field) for _ in range(count)))
    return " ".join(fields)


EDGE_DAYS = [(2024, 2, 28), (2024, 2, 29), (2023, 2, 28), (2100, 2, 28), (2000, 2, 29), (2026, 12, 31),
             (2099, 12, 31), (2100, 12, 31), (1969, 12, 31), (2024, 4, 30), (2025, 1, 31), (2026, 6, 30)]


def random_instant(rng: random.Random) -> datetime:
    kind = rng.randrange(4)
    if kind == 0:
        year, month, day = rng.choice(EDGE_DAYS)
        moment = datetime(year, month, day, 23, rng.choice([0, 59]), rng.choice([0, 58, 59]), tzinfo=UTC)
    elif kind == 1:
        moment = datetime(rng.randint(2024, 2030), 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(6 * 366 * 86400))
    else:
        moment = datetime(1968, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(135 * 366 * 86400))
    if rng.random() < 0.3:
        moment = moment.replace(microsecond=rng.randrange(1_000_000))
    if rng.random() < 0.2:  # an instant given in another offset: read in UTC
        moment = moment.astimezone(timezone(timedelta(hours=rng.randint(-12, 14), minutes=rng.choice([0, 30]))))
    return moment


def test_next_after_equals_the_stepping_oracle_on_random_expressions_and_instants() -> None:
    rng = random.Random(84)
    checked = fired = never = 0
    while checked < 4000:
        text = random_expression(rng)
        try:
            expr = CronExpression._parse(text)
        except CronSyntaxError:
            with pytest.raises(CronSyntaxError):
                oracle_fields(text)
            continue
        assert [expr.seconds, expr.minutes, expr.hours, expr.days, expr.months, expr.weekdays,
                expr.years] == oracle_fields(text), text
        for _ in range(3):
            instant = random_instant(rng)
            for _ in range(3):  # and the ticks after it, as a schedule asks
                expected = oracle_next_after(expr, instant)
                got = expr.next_after(instant)
                assert got == expected, (text, instant, got, expected)
                assert got is None or got.tzinfo is UTC
                checked += 1
                if got is None:
                    never += 1
                    break
                fired += 1
                instant = got
    assert fired > 2000 and never > 100, (fired, never)  # both outcomes exercised


@pytest.mark.parametrize("text", [
    "0 0 0 29 2 *", "0 0 0 29 2 MON", "59 59 23 31 12 * 2099", "0 0 0 30 2 *", "0 0 0 31 2,4,6,9,11 *",
    "* * * * * *", "0 0 0 29 2 * 2100", "0 0 0 31 * SUN", "0 0 0 1-7 * MON", "*/7 */11 */5 */3 */2 */3",
    "0 0 0 29 FEB SAT 2000-2100", "0 0 0 * * * 1970", "59 59 23 31 DEC * 2100", "0 0 0 L * *",
    "0 0 0 31 * FRI-SUN", "0 0 12 1-7 JAN,APR-JUN/2 2,4 2026-2030",
])
def test_edge_expressions_equal_the_oracle_from_many_instants(text: str) -> None:
    try:
        expr = CronExpression._parse(text)
    except CronSyntaxError:
        return  # (L is not supported: refused, as before)
    instants = [datetime(year, month, day, 23, 59, 59, tzinfo=UTC) for year, month, day in EDGE_DAYS]
    instants += [datetime(year, 1, 1, tzinfo=UTC) - timedelta(seconds=1) for year in (1970, 2000, 2024, 2100, 2101)]
    for instant in instants:
        assert expr.next_after(instant) == oracle_next_after(expr, instant), (text, instant)


@contextmanager
def counted_calls() -> Iterator[list[int]]:
    """Python and builtin function calls made meanwhile: a count of steps that timing noise leaves alone."""
    count = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            count[0] += 1

    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize("text", [
    "59 59 23 1 1 * 2099",  # due once, in 2099 (stepped 23 hours, 59 minutes, 59 seconds: ~600 calls)
    "0 0 * * * *",  # hourly (stepped up to 59 minutes)
    "0 0 0 29 2 MON",  # a Monday Feb 29 (every February to 2044)
    "0 0 0 30 2 *",  # never: no February has a 30th (every February to 2100)
    "0 0 0 31 2,4,6,9,11 *",  # never
])
def test_next_after_costs_a_bounded_number_of_steps(text: str) -> None:
    expr = CronExpression._parse(text)
    start = datetime(2026, 12, 7, 4, 10, 33, tzinfo=UTC)
    expr.next_after(start)  # (warms the day table kept by the date fields)
    with counted_calls() as calls:
        expr.next_after(start)
    # now 9-32 calls, 118 for Feb 29 MON (~6 a year passed over); before 773 to 8,596
    assert calls[0] <= 200, calls[0]


def test_parse_refuses_a_never_firing_expression_in_a_few_steps() -> None:
    CronExpression._parse("0 0 0 30 2 *").next_after(datetime.now(UTC))  # warm the day table
    with counted_calls() as calls, pytest.raises(CronSyntaxError, match="never fires"):
        CronExpression.parse("0 0 0 30 2 *")
    # now ~150 calls, nearly all parsing the six fields; before 5,479 (every February to 2100)
    assert calls[0] <= 400, calls[0]
