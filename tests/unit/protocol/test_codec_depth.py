"""The depth rule of :func:`iii.protocol.codec.loads` for big documents: shallow ones are cleared at C speed (no
walk of the decoded tree), deep ones are refused on every path."""

from __future__ import annotations

from typing import Any

import pytest

from iii.protocol import codec
from iii.protocol.codec import MAX_JSON_DEPTH, loads


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def wide(items: int) -> str:
    return "[" + ",".join('{"a":[1,{"b":null}]}' for _ in range(items)) + "]"


def test_orjson_limit_is_the_one_checked_against() -> None:
    assert codec._ORJSON_DEPTH in (254, 255)  # 255: orjson 3.9 writes one more level around an empty container


def test_a_big_shallow_document_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(value: Any) -> None:
        raise AssertionError("the tree was walked")

    monkeypatch.setattr(codec, "_check_tree", walked)
    assert len(loads(wide(1000))) == 1000  # 3,001 brackets, 4 levels


@pytest.mark.parametrize("leaf", ["1", "12345678901234567890123"])  # orjson, and the exact decoder for big ints
def test_depth_limit_holds_on_every_path(leaf: str) -> None:
    assert loads(nested(MAX_JSON_DEPTH, leaf)) is not None
    with pytest.raises(ValueError, match="nested deeper than 128"):
        loads(nested(MAX_JSON_DEPTH + 1, leaf))
    with pytest.raises(ValueError, match="nested deeper than 128"):
        loads(f'[{wide(100)},{nested(MAX_JSON_DEPTH, leaf)}]')


def test_without_the_shortcut_the_walk_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_ORJSON_DEPTH", None)
    assert len(loads(wide(100))) == 100
    with pytest.raises(ValueError, match="nested deeper than 128"):
        loads(nested(MAX_JSON_DEPTH + 1))


class _Hook:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __iii_json__(self) -> Any:
        return self.value


def _lists(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def test_objects_the_encoder_converts_on_its_way_count_toward_the_depth() -> None:
    """Found by an attack: the walk took a hook's value (and a model an enum holds) for a leaf, so a value nesting
    200 levels through them was written, and no reader took it back."""
    import enum

    from pydantic import BaseModel

    class Model(BaseModel):
        a: Any

    holds = enum.Enum("holds", [("deep", Model(a=_lists(200))), ("fits", Model(a=_lists(MAX_JSON_DEPTH - 3)))])
    for too_deep in ([_Hook([_Hook(_lists(200))])], [_Hook([_Hook(_lists(MAX_JSON_DEPTH - 1))])],
                     {"e": holds.deep}):
        with pytest.raises(ValueError, match="nested deeper than 128"):
            codec.dumps(too_deep)
        assert not codec.fits_within(too_deep, MAX_JSON_DEPTH)
    deepest = [_Hook([_Hook(_lists(MAX_JSON_DEPTH - 2))])]  # 2 lists around 126: 128 levels
    assert loads(codec.dumps(deepest)) == [[_lists(MAX_JSON_DEPTH - 2)]]
    assert loads(codec.dumps({"e": holds.fits})) == {"e": {"a": _lists(MAX_JSON_DEPTH - 3)}}
