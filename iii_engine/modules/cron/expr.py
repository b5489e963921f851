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
from dataclasses import dataclass, field
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


def _parse_field(spec: _Field, text: str) -> int:
    """The values ``text`` lists in ``spec``'s field, as bits (bit ``n``: ``n`` is listed)."""
    mask = 0
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
        if step == 1:  # (a run of bits at once: "*" of the years was 131 set insertions, then 131 shifts)
            mask |= (1 << (high + 1)) - (1 << low)
        else:
            for value in range(low, high + 1, step):
                mask |= 1 << value
    return mask


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
    # the date fields read together (:func:`_day_table`): one tuple shared by expressions with equal date fields
    _table: _DayTable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_table", _day_table(int(self.days), int(self.months), int(self.weekdays)))

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
        masks = [_parse_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True)]
        if masks[5] >> 7 & 1:  # day-of-week 7 is Sunday, 0
            masks[5] = (masks[5] | 1) & ~(1 << 7)
        seconds, minutes, hours, days, months, weekdays, years = (_shared(mask) for mask in masks)
        return cls(source=expression, seconds=seconds, minutes=minutes, hours=hours, days=days, months=months,
                   weekdays=weekdays, years=years)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first matching whole second strictly after ``instant`` (UTC), or ``None`` if none remains.

        Each field jumps to its next listed value, read from the bits, and carries to the next larger field when
        none is left, so one call costs a few steps per year passed over, at most one per year in :attr:`years`
        (it stepped hour by hour, minute by minute, second by second: ~0.5 ms for a schedule due once in 2099, and a
        day no month has, ``30 2``, walked every February to 2100: 1.5 ms, on the engine's loop per registration).

        Example:
            >>> e = CronExpression.parse("0 30 12 * * *")
            >>> e.next_after(datetime(2024, 5, 1, 12, 30, tzinfo=UTC)).isoformat()
            '2024-05-02T12:30:00+00:00'
        """
        moment = instant.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        year, month, day = moment.year, moment.month, moment.day
        table = self._table
        if _date_listed(int(self.years), table, year, month, day):  # (most ticks: no search for the date)
            time = self._time_from(moment.hour, moment.minute, moment.second)
            if time is not None:
                return datetime(year, month, day, *time, tzinfo=UTC)
            day += 1  # none left today: the first tick of the next listed date (day 32 is in no month)
        found = self._next_date(table, year, month, day)
        if found is None:
            return None
        return datetime(*found, _least(self.hours), _least(self.minutes), _least(self.seconds), tzinfo=UTC)

    def _time_from(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
        """The first listed time of day at or after ``hour:minute:second`` (``None``: none left that day)."""
        hours, minutes, seconds = int(self.hours), int(self.minutes), int(self.seconds)
        if (hours >> hour) & 1:
            if (minutes >> minute) & 1:
                later = seconds >> second
                if later:
                    return hour, minute, second + _least(later)
            later = minutes >> (minute + 1)
            if later:
                return hour, minute + 1 + _least(later), _least(seconds)
        later = hours >> (hour + 1)
        if not later:
            return None
        return hour + 1 + _least(later), _least(minutes), _least(seconds)

    def _next_date(self, table: _DayTable, year: int, month: int, day: int) -> tuple[int, int, int] | None:
        """The first date on or after ``year-month-day`` (``day`` up to 32) that every date field lists: at most
        two looks per year listed, each a few bit operations (``table``: :func:`_day_table` of the date fields)."""
        by_first, by_year = table
        if not any(by_year):
            return None
        while True:
            listed_year = self.years.next_from(year)
            if listed_year is None:
                return None
            if listed_year != year:
                year, month, day = listed_year, 1, 1
            kind = _YEAR_KINDS[year - MIN_YEAR]
            leap, first_weekday = divmod(kind, 7)
            months = by_year[kind] >> month
            if months & 1:  # this month holds a matching day: is one left from ``day``?
                days = by_first[(first_weekday + _DAYS_BEFORE[leap][month]) % 7] & _month_mask(leap, month)
                days >>= day
                if days:
                    return year, month, day + _least(days)
            months >>= 1
            if months:
                month += 1 + _least(months)
                days = by_first[(first_weekday + _DAYS_BEFORE[leap][month]) % 7] & _month_mask(leap, month)
                return year, month, _least(days)
            year, month, day = year + 1, 1, 1

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
# keyed by the plain int: a Bits key compared by Bits.__eq__, a Python call per lookup
_shared_fields: dict[int, Bits] = {}


def _shared(mask: int) -> Bits:
    """One :class:`Bits` for equal field values (the years of ``*`` in every expression), up to :data:`_SHARED_KEPT`
    distinct ones: after that a new value is kept by its expression alone (it costs what it did unshared)."""
    kept = _shared_fields.get(mask)
    if kept is not None:
        return kept
    bits = Bits(mask)
    if len(_shared_fields) < _SHARED_KEPT:
        _shared_fields[mask] = bits
    return bits


def _second_of_day(moment: datetime) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def _least(mask: int) -> int:
    """The lowest set bit's index of a non-zero ``mask``."""
    return (mask & -mask).bit_length() - 1


_MONTH_DAYS = ((0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31))
# days of the year before each month (index 1-12), in a common and a leap year
_DAYS_BEFORE = tuple(tuple(sum(lengths[1:month]) for month in range(13)) for lengths in _MONTH_DAYS)
# each year's by_year index in _day_table (leap * 7 + Jan 1's weekday, Sunday = 0), from MIN_YEAR on
_YEAR_KINDS = tuple(calendar.isleap(year) * 7 + (date(year, 1, 1).weekday() + 1) % 7
                    for year in range(MIN_YEAR, MAX_YEAR + 1))
# days 1 to 35, a week apart from day 1: a 7-bit weekday pattern times this repeats it over a month
_WEEKS = sum(1 << (7 * week) for week in range(5))


def _month_mask(leap: int, month: int) -> int:
    """Bits 1 to the month's length."""
    return (1 << (_MONTH_DAYS[leap][month] + 1)) - 2


_DayTable = tuple[tuple[int, ...], tuple[int, ...]]


def _date_listed(years: int, table: _DayTable, year: int, month: int, day: int) -> bool:
    """Whether every date field lists ``year-month-day`` (``years``: the year field's bits)."""
    if not (years >> year) & 1:
        return False
    kind = _YEAR_KINDS[year - MIN_YEAR]
    by_first, by_year = table
    return bool((by_year[kind] >> month) & 1
                and (by_first[(kind % 7 + _DAYS_BEFORE[kind >= 7][month]) % 7] >> day) & 1)


@lru_cache(maxsize=_SHARED_KEPT)
def _day_table(days: int, months: int, weekdays: int) -> _DayTable:
    """What :meth:`CronExpression._next_date` reads instead of walking days: ``by_first[w]`` is the days listed
    whose weekday is listed too (day-of-month AND day-of-week) in a month whose 1st is cron weekday ``w``;
    ``by_year[leap * 7 + w]`` is the months listed that hold such a day in a year whose Jan 1 is weekday ``w``.
    All zero: the expression never fires. Kept by the three fields, which expressions mostly share.

    Example:
        >>> by_first, by_year = _day_table(1 << 30, 1 << 2, 0b1111111)  # "30 2 *": no February holds it
        >>> any(by_year)
        False
    """
    # bit j of a week's pattern: day 1 + j falls on a listed weekday, in a month whose 1st is weekday ``first``
    by_first = tuple(days & (((weekdays >> first | weekdays << (7 - first)) & 0x7F) * _WEEKS) << 1
                     for first in range(7))
    by_year: list[int] = []
    for leap in (0, 1):
        months_listed = [(month, _DAYS_BEFORE[leap][month], _month_mask(leap, month))
                         for month in range(1, 13) if months >> month & 1]
        if len(set(by_first)) == 1:  # every weekday listed (most expressions): Jan 1's weekday changes nothing
            holding = sum(1 << month for month, _, in_month in months_listed if by_first[0] & in_month)
            by_year += [holding] * 7
            continue
        for first_of_year in range(7):
            holding = 0
            for month, before, in_month in months_listed:
                if by_first[(first_of_year + before) % 7] & in_month:
                    holding |= 1 << month
            by_year.append(holding)
    return tuple(by_first), tuple(by_year)


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
