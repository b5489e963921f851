"""An enum is written as its value by orjson, which writes NaN and infinities as null: a NaN held by an enum's value
went out as ``null`` when the document took orjson's path, and was refused when the same document took the standard
encoder's path (an integer beyond 64 bits). NaN is refused on both paths."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import pytest

from iii.protocol.codec import dumps


class _Odd(enum.Enum):
    NAN = float("nan")
    INF = float("-inf")
    IN_LIST = [1.0, float("nan")]
    DEEP = {"k": [dt.datetime(2020, 1, 1), {"x": float("inf")}]}


class _FloatOdd(float, enum.Enum):
    NAN = float("nan")


class _Fine(enum.Enum):
    DAY = {"at": dt.datetime(2020, 1, 1), "n": None, "f": 1.5}


@pytest.mark.parametrize("member", [*_Odd, _FloatOdd.NAN], ids=repr)
@pytest.mark.parametrize("shape", ["alone", "in_dict", "wide", "with_big_int"])
def test_a_nan_in_an_enum_value_is_refused_on_every_path(member: Any, shape: str) -> None:
    document: Any = {
        "alone": member,
        "in_dict": {"a": [None, {"b": member}]},
        "wide": [{"row": i, "v": member if i == 700 else i} for i in range(1000)],  # a text big enough to be looked at
        "with_big_int": [member, 2**70],
    }[shape]
    with pytest.raises(ValueError, match="NaN and Infinity"):
        dumps(document)


def test_an_enum_with_a_finite_value_is_written_alike_on_both_paths() -> None:
    alone = dumps([_Fine.DAY])
    assert alone == '[{"at":"2020-01-01T00:00:00","n":null,"f":1.5}]'
    assert dumps([_Fine.DAY, 2**70]) == alone[:-1] + ",1180591620717411303424]"
