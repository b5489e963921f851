"""Cron expressions in the production engine's format: ``sec min hour day-of-month month day-of-week [year]``.

Evaluated in UTC. Each field accepts ``*``, ``?`` (same as ``*``), numbers, ``a-b`` ranges, ``/step`` on any of
those, and comma lists; months and weekdays also accept three-letter names (``JAN``, ``MON``). Shortcuts
``@yearly``/``@annually``/``@monthly``/``@weekly``/``@daily``/``@midnight``/``@hourly`` are accepted.

Choices where production is unverified (docs/guides/engine.md#modules): day-of-week is 0-6 with Sunday = 0 (7 is also
Sunday), as the published docs say; when both day-of-month and day-of-week are restricted, a day must match
both (the Rust ``cron`` crate's rule, not Vixie cron's "either").

Example:
    >>> from datetime import datetime, timezone
    >>> expr = CronExpression.parse("*/15 * * * * *")
    >>> expr.next_after(datetime(2024, 1, 1, 0, 0, 7, tzinfo=timezone.utc)).isoformat()
    '2024-01-01T00:00:15+00:00'
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

MIN_YEAR = 1970
MAX_YEAR = 2100
#: longest expression accepted: every value of every field listed one by one is about 1,200 characters, and the
#: parse costs time on the engine's loop per character (a 4 MiB "*,*,*,…" took seconds)
MAX_EXPRESSION_CHARS = 4096
# how much of an offending text an error message quotes
_QUOTE = 100

_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_SHORTCUTS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * SUN",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}


class CronSyntaxError(ValueError):
    """The expression is malformed; the message names the field and the offending text."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("seconds", 0, 59),
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _WEEKDAYS),
    _Field("year", MIN_YEAR, MAX_YEAR),
)


def _value(spec: _Field, text: str) -> int:
    """The number ``text`` names in ``spec``'s field. ASCII only, names as digits: ``"\\u017fun".upper()`` (a long
    s) is ``"SUN"``, and such a name was taken for Sunday.

    Example:
        >>> _value(_FIELDS[5], "sun")
        0
        >>> try:
        ...     _value(_FIELDS[5], "\\u017fun")
        ... except CronSyntaxError as exc:
        ...     print(str(exc).endswith("is not a number"))
        True
    """
    upper = text.upper() if text.isascii() else ""
    if spec.names is not None and upper in spec.names:
        return spec.names[upper]
    if not _is_number(text):
        raise CronSyntaxError(f"{spec.name}: {text!r:.{_QUOTE}} is not a number")
    number = int(text)
    if not spec.low <= number <= spec.high:
        # quoted short like every other text here: the number may have thousands of digits
        raise CronSyntaxError(f"{spec.name}: {text:.{_QUOTE}} is outside {spec.low}-{spec.high}")
    return number


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also says yes to "²" or "٣", which ``int`` then refuses.

    Example:
        >>> _is_number("12"), _is_number("²"), _is_number("")
        (True, False, False)
    """
    return text.isascii() and text.isdigit()


def _parse_field(spec: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronSyntaxError(f"{spec.name}: empty list item in {text!r:.{_QUOTE}}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text) or int(step_text) == 0:
                raise CronSyntaxError(f"{spec.name}: bad step {step_text!r:.{_QUOTE}} in {part!r:.{_QUOTE}}")
            step = int(step_text)
        if base in ("*", "?"):
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(spec, first), _value(spec, last)
            if spec.names is _WEEKDAYS and last.upper() == "SUN" and low > high:
                high = 7  # FRI-SUN: Sunday ends a range as 7, as the number does (5-7)
            if low > high:
                raise CronSyntaxError(f"{spec.name}: range {base!r:.{_QUOTE}} runs backwards")
        else:
            low = _value(spec, base)
            # "5/10" means from 5 to the end of the field in steps of 10.
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


class Bits(int):
    """A set of small non-negative ints held as the bits of one int (bit ``n`` set: ``n`` is in it), read as a
    frozenset is (``in``, iteration in order, ``len``, ``==`` with a set). Why: a cron trigger kept seven frozensets
    (the ``years`` of ``*`` alone, 131 ints), 14.4 KiB of its schedule's 17.9, where it was charged 6 KiB; as bits
    the seven cost a few hundred bytes whatever they hold.

    Example:
        >>> hours = Bits.of({9, 13, 17})
        >>> 13 in hours, 14 in hours, list(hours), len(hours), hours == frozenset({9, 13, 17})
        (True, False, [9, 13, 17], 3, True)
        >>> hours.below(13), Bits.of(range(1970, 2101)).below(2000)
        (1, 30)
    """

    __slots__ = ()

    @classmethod
    def of(cls, values: Iterable[int]) -> Bits:
        """The set of ``values`` (each 0 or more)."""
        mask = 0
        for value in values:
            mask |= 1 << value
        return cls(mask)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and value >= 0 and (int(self) >> value) & 1 == 1

    def __iter__(self) -> Iterator[int]:
        mask = int(self)
        while mask:
            low = mask & -mask
            yield low.bit_length() - 1
            mask ^= low

    def __len__(self) -> int:
        return self.bit_count()

    def next_from(self, value: int) -> int | None:
        """Its least value of at least ``value`` (``None``: none).

        Example:
            >>> Bits.of({9, 13, 17}).next_from(10), Bits.of({9}).next_from(10)
            (13, None)
        """
        mask = int(self) >> max(value, 0)
        return None if not mask else max(value, 0) + (mask & -mask).bit_length() - 1

    def below(self, value: int) -> int:
        """How many of its values are less than ``value`` (``bisect_left`` on them sorted)."""
        return (int(self) & ((1 << max(value, 0)) - 1)).bit_count()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (set, frozenset)):
            return set(self) == other
        return int(self) == other

    __hash__ = int.__hash__

    def __repr__(self) -> str:
        return f"Bits({sorted(self)})"


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed cron schedule; :meth:`next_after` gives the next firing time strictly after an instant.

    The fields are :class:`Bits` (years from 1970 to 2100 too: bit 2100 makes an int of 2,101 bits, 300 bytes, still
    far below the 131-int frozenset it replaces, and shared: see :meth:`parse`).
    """

    source: str
    seconds: Bits
    minutes: Bits
    hours: Bits
    days: Bits
    months: Bits
    weekdays: Bits
    years: Bits

    @classmethod
    def parse(cls, expression: str) -> CronExpression:
        """Parse a 6- or 7-field expression (or a ``@`` shortcut); raises :class:`CronSyntaxError`.

        The same text parsed again gives the same (immutable) object while it is among the last
        :data:`_PARSED_KEPT` parsed, and equal fields share one int: 20,000 triggers of one expression keep one.

        Example:
            >>> sorted(CronExpression.parse("0 0 9-17/4 * * MON-FRI").hours)
            [9, 13, 17]
            >>> CronExpression.parse("0 0 0 1 1 *") is CronExpression.parse("0 0 0 1 1 *")
            True
        """
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise CronSyntaxError(f"{len(expression)} characters, more than {MAX_EXPRESSION_CHARS}")
        # (a long text is parsed each time: kept, each of the 1,024 could hold 4 KiB)
        expr = _parse_kept(expression) if len(expression) <= _KEPT_CHARS else cls._parse(expression)
        if expr.next_after(datetime.now(UTC)) is None:
            raise CronSyntaxError(f"{expression!r:.{_QUOTE}} never fires after now")
        return expr

    @classmethod
    def _parse(cls, expression: str) -> CronExpression:
        """:meth:`parse` of ``expression``, not looked up among those kept, and whether it still fires unchecked."""
        text = expression.strip()
        if text.isascii():  # (the Kelvin sign lowers to "k": "@wee\u212aly" was "@weekly")
            text = _SHORTCUTS.get(text.lower(), text)
        parts = text.split()
        if len(parts) not in (6, 7):
            raise CronSyntaxError(
                f"expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), got {len(parts)}"
                f" in {expression!r:.{_QUOTE}}"
            )
        if len(parts) == 6:
            parts.append("*")
        sets = [_parse_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True)]
        sets[5] = frozenset(0 if d == 7 else d for d in sets[5])
        seconds, minutes, hours, days, months, weekdays, years = (_shared(Bits.of(values)) for values in sets)
        return cls(source=expression, seconds=seconds, minutes=minutes, hours=hours, days=days, months=months,
                   weekdays=weekdays, years=years)

    def _day_matches(self, moment: datetime) -> bool:
        if moment.day not in self.days:
            return False
        # Python: Monday = 0; cron: Sunday = 0.
        return (moment.weekday() + 1) % 7 in self.weekdays

    def _next_day(self, moment: datetime) -> datetime:
        """Midnight of the next day of this month listed in ``days``, else the first of the next month: one step
        per month at most, read from the bits (a day no month has, "31 2,4,6,9,11", walked every day of 76 years,
        16-55 ms of the engine's loop per registration of a trigger refused in the end; then every day of each month
        it stepped through, 7-11 ms)."""
        day = self.days.next_from(moment.day + 1)
        if day is not None and day <= calendar.monthrange(moment.year, moment.month)[1]:
            return datetime(moment.year, moment.month, day, tzinfo=UTC)
        return _start_of_next_month(moment)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first matching whole second strictly after ``instant`` (UTC), or ``None`` if none remains.

        Example:
            >>> e = CronExpression.parse("0 30 12 * * *")
            >>> e.next_after(datetime(2024, 5, 1, 12, 30, tzinfo=UTC)).isoformat()
            '2024-05-02T12:30:00+00:00'
        """
        moment = instant.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        while moment.year <= MAX_YEAR:
            if moment.year not in self.years:
                later = [y for y in self.years if y > moment.year]
                if not later:
                    return None
                moment = datetime(min(later), 1, 1, tzinfo=UTC)
                continue
            if moment.month not in self.months:
                moment = _start_of_next_month(moment)
                continue
            if not self._day_matches(moment):
                moment = self._next_day(moment)
                continue
            if moment.hour not in self.hours:
                moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if moment.minute not in self.minutes:
                moment = moment.replace(second=0) + timedelta(minutes=1)
                continue
            if moment.second not in self.seconds:
                moment += timedelta(seconds=1)
                continue
            return moment
        return None


    def count_between(self, after: datetime, until: datetime) -> int:
        """How many ticks fall strictly after ``after`` and no later than ``until``: what :meth:`next_after`
        would step through, counted by arithmetic per month and day, not tick by tick (a day's stall of an
        every-second schedule is 86,400 ticks; the count costs at most a few thousand steps whatever the span).

        Example:
            >>> e = CronExpression.parse("*/10 * * * * *")
            >>> e.count_between(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
            8640
        """
        start = after.astimezone(UTC).replace(microsecond=0)
        end = until.astimezone(UTC).replace(microsecond=0)
        if end <= start:
            return 0
        first, last = start.date(), end.date()
        if first == last:
            if not self._date_matches(first.year, first.month, first.day):
                return 0
            return self._ticks_to(_second_of_day(end)) - self._ticks_to(_second_of_day(start))
        count = 0
        if self._date_matches(first.year, first.month, first.day):
            count += self._ticks_to(_DAY_S - 1) - self._ticks_to(_second_of_day(start))
        if self._date_matches(last.year, last.month, last.day):
            count += self._ticks_to(_second_of_day(end))
        days_between = self._days_matching(first + timedelta(days=1), last - timedelta(days=1))
        return count + days_between * self._ticks_to(_DAY_S - 1)

    def _date_matches(self, year: int, month: int, day: int) -> bool:
        return (year in self.years and month in self.months and day in self.days
                and (calendar.weekday(year, month, day) + 1) % 7 in self.weekdays)

    def _ticks_to(self, second: int) -> int:
        """Ticks of a matching day at or before its ``second`` (0-86399; -1 for none)."""
        if second < 0:
            return 0
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        hour, rest = divmod(second, 3600)
        minute, sec = divmod(rest, 60)
        per_hour = len(minutes) * len(seconds)
        count = hours.below(hour) * per_hour
        if hour in hours:
            count += minutes.below(minute) * len(seconds)
            if minute in minutes:
                count += seconds.below(sec + 1)
        return count

    def _days_matching(self, first: date, last: date) -> int:
        """Matching days from ``first`` to ``last`` (both included): one step per month, at most 31 per month."""
        count = 0
        year, month = first.year, first.month
        while (year, month) <= (last.year, last.month):
            if year not in self.years:
                year, month = year + 1, 1
                continue
            if month in self.months:
                low = first.day if (year, month) == (first.year, first.month) else 1
                high = last.day if (year, month) == (last.year, last.month) else calendar.monthrange(year, month)[1]
                weekday_of_first = calendar.weekday(year, month, 1)
                count += sum(1 for day in self.days
                             if low <= day <= high and (weekday_of_first + day) % 7 in self.weekdays)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return count


_DAY_S = 86_400

_PARSED_KEPT = 1024
"""Parsed expressions kept by their text, the most recently parsed (:meth:`CronExpression.parse`)."""
_KEPT_CHARS = 256
_parse_kept = lru_cache(maxsize=_PARSED_KEPT)(CronExpression._parse)  # (a refused text raises: nothing is kept)

_SHARED_KEPT = 4096
_shared_fields: dict[Bits, Bits] = {}


def _shared(bits: Bits) -> Bits:
    """One :class:`Bits` for equal field values (the years of ``*`` in every expression), up to :data:`_SHARED_KEPT`
    distinct ones: after that a new value is kept by its expression alone (it costs what it did unshared)."""
    kept = _shared_fields.get(bits)
    if kept is not None:
        return kept
    if len(_shared_fields) < _SHARED_KEPT:
        _shared_fields[bits] = bits
    return bits


def _second_of_day(moment: datetime) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def _start_of_next_month(moment: datetime) -> datetime:
    if moment.month == 12:
        return datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    return datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    """Format like the production engine (chrono ``to_rfc3339``): ``+00:00`` offset, 0/3/6 fraction digits.

    Example:
        >>> rfc3339(datetime(2024, 1, 1, 0, 0, 5, 250000, tzinfo=UTC))
        '2024-01-01T00:00:05.250+00:00'
    """
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micro = moment.microsecond
    if micro == 0:
        fraction = ""
    elif micro % 1000 == 0:
        fraction = f".{micro // 1000:03d}"
    else:
        fraction = f".{micro:06d}"
    return f"{base}{fraction}+00:00"
