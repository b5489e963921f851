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
