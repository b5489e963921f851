"""A dict or list subclass whose ``values``/``items``/``__iter__`` hide its contents still has a NaN in them refused:
orjson writes what the container holds (a NaN as null), not what those methods return, so the null walk
(``_check_tree``) must read the same storage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from iii.protocol.codec import MAX_JSON_DEPTH, _check_tree, dumps


class _HidingDict(dict):  # type: ignore[type-arg]
    def values(self) -> Any:
        return iter(())

    def items(self) -> Any:
        return iter(())

    def __iter__(self) -> Iterator[Any]:
        return iter(())


class _HidingList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return iter(())


class _HidingTuple(tuple):  # type: ignore[type-arg]
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return iter(())


_NAN = float("nan")


@pytest.mark.parametrize("value", [
    _HidingDict(k=_NAN),
    [None, _HidingDict(k=[1, float("inf")])],
    _HidingList([_NAN]),
    {"a": None, "b": _HidingList([{"c": float("-inf")}])},
], ids=["dict", "dict-nested", "list", "list-nested"])
def test_a_nan_behind_an_overridden_iteration_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="NaN and Infinity"):
        dumps(value)  # before: written with the NaN as null
    with pytest.raises(ValueError, match="NaN and Infinity"):
        _check_tree(value)


def test_a_tuple_subclass_hiding_a_nan_is_refused_by_the_walk() -> None:
    with pytest.raises(ValueError, match="NaN and Infinity"):
        _check_tree([None, _HidingTuple((_NAN,))])


def test_hidden_finite_contents_still_pass_and_are_written() -> None:
    assert dumps([None, _HidingDict(k=1.5), _HidingList([None, 2])]) == '[null,{"k":1.5},[null,2]]'


@pytest.mark.parametrize("wrap", [_HidingDict, _HidingList], ids=lambda w: w.__name__)
def test_the_depth_limit_counts_hidden_levels(wrap: type) -> None:
    def nest(levels: int) -> object:
        value: object = None
        for _ in range(levels):
            value = wrap(x=value) if wrap is _HidingDict else wrap([value])
        return value

    _check_tree(nest(MAX_JSON_DEPTH))
    with pytest.raises(ValueError, match="nest"):
        _check_tree(nest(MAX_JSON_DEPTH + 1))
