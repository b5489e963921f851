"""The walk that tells a None from a NaN orjson wrote as null (``_check_tree``) knows subclasses of dict, list and
tuple as containers, and plain containers, floats, dataclasses and enums as before."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pytest

from iii.protocol.codec import MAX_JSON_DEPTH, _check_tree, dumps


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _List(list):  # type: ignore[type-arg]
    pass


class _Tuple(tuple):  # type: ignore[type-arg]
    __slots__ = ()


class _Float(float):
    pass


class _Colour(enum.Enum):
    NONE = None
    NAN = float("nan")


@dataclass
class _Point:
    x: float
    y: object = None


@pytest.mark.parametrize("value", [
    _Dict(a=None, b=[float("nan")]),
    {"a": None, "b": _List([1, _Dict(c=float("inf"))])},
    [None, _Tuple((1.5, _Float("nan")))],
    (None, {"p": _Point(float("-inf"))}),
    [None, _Colour.NAN],
], ids=["dict-subclass", "list-subclass", "tuple-subclass-float-subclass", "tuple-dataclass", "enum"])
def test_a_non_finite_float_is_refused_wherever_it_sits(value: object) -> None:
    with pytest.raises(ValueError, match="NaN and Infinity"):
        _check_tree(value)
    if not isinstance(value, tuple):  # (orjson writes no tuple subclass: the standard path refuses it on its own)
        with pytest.raises(ValueError, match="NaN and Infinity"):
            dumps(value)


def test_nones_and_finite_floats_pass() -> None:
    value = {"a": _Dict(b=None, c=_List([_Float(1.5), None, (2.5, None)])), "p": _Point(0.5), "e": _Colour.NONE}
    _check_tree(value)
    assert dumps(value) == '{"a":{"b":null,"c":[1.5,null,[2.5,null]]},"p":{"x":0.5,"y":null},"e":null}'


@pytest.mark.parametrize("wrap", [dict, _Dict, list, _List, _Tuple], ids=lambda w: w.__name__)
def test_nesting_past_the_limit_is_refused_in_any_container(wrap: type) -> None:
    def nest(levels: int) -> object:
        value: object = None
        for _ in range(levels):
            value = wrap(x=value) if wrap in (dict, _Dict) else wrap([value])
        return value

    _check_tree(nest(MAX_JSON_DEPTH))
    with pytest.raises(ValueError, match="nest"):
        _check_tree(nest(MAX_JSON_DEPTH + 1))
