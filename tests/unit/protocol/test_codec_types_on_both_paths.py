"""``dumps`` writes a value the same way whichever encoder it takes: orjson for most documents, the standard one for
a document orjson cannot write (an integer beyond 64 bits, a non-str key). Dates, times, UUIDs and enums, which
orjson writes by itself, were a ``TypeError`` on the standard path: a handler's result holding a datetime went out
unless the same result also held a big integer."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
import zoneinfo
from typing import Any

import orjson
import pytest

from iii.protocol.codec import dumps, loads


class _Colour(enum.Enum):
    RED = {"rgb": (255, 0, 0)}
    DAY = dt.date(2020, 1, 2)


class _Word(enum.StrEnum):
    A = "a"


class _Level(enum.IntEnum):
    HIGH = 3


_UTC = dt.UTC
_VALUES: list[Any] = [
    dt.datetime(2020, 1, 1, 1, 2, 3, 4),
    dt.datetime(2020, 1, 1, tzinfo=_UTC),
    dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.datetime(2020, 6, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.datetime(1900, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),  # local mean time: +00:09:21
    *(dt.datetime(2020, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(seconds=s))) for s in (29, 30, -30, 3601)),
    dt.date(2020, 1, 2),
    dt.time(1, 2, 3, 5),
    _Colour.RED,
    _Colour.DAY,
    _Word.A,
    _Level.HIGH,
    uuid.UUID(int=5),
]


@pytest.mark.parametrize("value", _VALUES, ids=repr)
def test_a_value_orjson_writes_is_written_the_same_on_the_standard_path(value: Any) -> None:
    alone = dumps({"v": value})
    assert alone == orjson.dumps({"v": value}).decode()
    # an integer beyond 64 bits, and a non-str key, send the document to the standard encoder
    assert dumps({"v": value, "big": 2**70}) == alone[:-1] + ',"big":1180591620717411303424}'
    assert loads(dumps({1: value}))["1"] == loads(alone)["v"]


def test_a_time_with_a_timezone_is_refused_on_both_paths() -> None:
    value = dt.time(1, tzinfo=_UTC)
    for document in ([value], [value, 2**70]):
        with pytest.raises(TypeError, match="tzinfo"):
            dumps(document)


def test_what_neither_encoder_knows_is_still_refused_by_name() -> None:
    for document in ([dt.timedelta(1)], [dt.timedelta(1), 2**70]):
        with pytest.raises(TypeError, match="timedelta"):
            dumps(document)
