"""``dumps`` keeps the policy (no NaN/Infinity, 128 levels) on big documents without walking them in Python.

orjson writes NaN and Infinity as null, so a "null" in its text asks whether the value held one. Before, any None
had the whole value walked in Python (26-37 ms for 4 MiB, 5-9 times orjson's encode), a document of more than 128
brackets was encoded a second time for its depth, and one holding an integer beyond 64 bits was converted node by
node before the standard encoder wrote it (4 times that encoder's time). Now a big value is looked at level by level
by C code, stopping as soon as its Nones account for every "null"; a big document after a big one is written wrapped
in the lists that prove its depth in the one encode; plain containers go to the standard encoder unconverted.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

import pytest

from iii.protocol import codec
from iii.protocol.codec import MAX_JSON_DEPTH, dumps

ROWS = [{"id": i, "name": f"user-{i}", "score": i / 7, "tags": ["a", "bb"], "deleted_at": None} for i in range(3000)]
NAN_FORMS = [float("nan"), float("inf"), -float("inf")]


def _no_walk(value: Any) -> None:
    raise AssertionError("walked the value in Python")


def _nested(depth: int, leaf: Any = 1) -> Any:
    """A value nesting ``depth`` levels: lists around ``leaf`` (a level too when it is an empty list)."""
    value = leaf
    for _ in range(depth - (1 if leaf == [] else 0)):
        value = [value]
    return value


def _wrap_ahead(on: bool) -> None:
    """Whether dumps writes the next value wrapped at once (as after a big document)."""
    if hasattr(codec, "_WrapAhead"):  # (so that these tests also run on the code before it)
        codec._WrapAhead.on = on


@pytest.fixture(autouse=True)
def _wrap_off() -> Any:
    _wrap_ahead(False)
    yield
    _wrap_ahead(False)


@pytest.mark.parametrize("where", ["envelope", "rows"])
def test_a_big_document_holding_none_is_not_walked(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    value: dict[str, Any] = {"type": "invokefunction", "data": {"rows": ROWS}}
    if where == "envelope":
        value = {**value, "data": {"rows": [{**row, "deleted_at": 1} for row in ROWS]}, "error": None}
    monkeypatch.setattr(codec, "_check_tree", _no_walk)
    assert json.loads(dumps(value)) == value


@pytest.mark.parametrize("bad", NAN_FORMS, ids=repr)
@pytest.mark.parametrize("where", ["envelope", "row", "last row", "deep", "tuple", "shared", "with nulls in text"])
def test_nan_and_infinity_are_refused_wherever_they_are(bad: float, where: str) -> None:
    rows: list[Any] = [dict(row) for row in ROWS]
    value: dict[str, Any] = {"data": {"rows": rows}, "error": None}
    if where == "envelope":
        value["score"] = bad
    elif where == "row":
        rows[1500]["score"] = bad
    elif where == "last row":
        rows[-1]["deleted_at"] = bad  # a null where a None was: the Nones no longer account for every null
    elif where == "deep":
        rows[7]["tags"] = _nested(100, bad)  # 103 levels
    elif where == "tuple":
        rows[9]["tags"] = ("a", (1.5, bad))
    elif where == "shared":
        shared = [1.0, bad]
        value["a"] = value["b"] = shared
    else:
        value["note"] = "a null, nullable, [null] and :null in strings"
        rows[2999]["score"] = bad
    with pytest.raises(ValueError, match="NaN and Infinity are not valid JSON"):
        dumps(value)
    _wrap_ahead(True)  # written wrapped as well
    with pytest.raises(ValueError, match="NaN and Infinity are not valid JSON"):
        dumps(value)


def test_finite_floats_whose_sum_overflows_are_fine() -> None:
    value = {"big": [1.7e308] * 5000, "n": None}
    assert json.loads(dumps(value)) == value


@dataclasses.dataclass
class Point:
    x: float
    y: Any = None


class Level(float, enum.Enum):
    TOP = math.inf


@pytest.mark.parametrize("bad", [Point(math.nan), Level.TOP, {"p": [Point(1.0, [math.inf])]}], ids=repr)
def test_objects_orjson_writes_by_fields_or_value_are_still_checked(bad: Any) -> None:
    with pytest.raises(ValueError, match="NaN and Infinity"):
        dumps({"rows": ROWS, "bad": bad})
    assert json.loads(dumps({"rows": ROWS, "ok": Point(1.0)}))["ok"] == {"x": 1.0, "y": None}


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("wrap_ahead", [False, True])
def test_depth_holds_on_big_documents(nulls: bool, wrap_ahead: bool) -> None:
    rows = ROWS if nulls else [{**row, "deleted_at": 0} for row in ROWS]
    for leaf in (1, [], None):  # the document's own object is one level
        _wrap_ahead(wrap_ahead)
        assert dumps({"rows": rows, "deep": _nested(MAX_JSON_DEPTH - 1, leaf)}) is not None
        _wrap_ahead(wrap_ahead)
        with pytest.raises(ValueError, match="nested deeper than 128"):
            dumps({"rows": rows, "deep": _nested(MAX_JSON_DEPTH, leaf)})
        _wrap_ahead(wrap_ahead)
        with pytest.raises(ValueError, match="nested deeper than 128"):
            dumps({"rows": rows, "deep": _nested(200, leaf)})  # within orjson's 254 levels, not ours


def test_a_big_wide_document_after_a_big_one_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    value = {"rows": [{**row, "deleted_at": 0} for row in ROWS]}  # 12,001 brackets, no null
    calls: list[Any] = []
    real = codec._orjson.dumps

    def counted(item: Any, *args: Any) -> bytes:
        calls.append(item)
        return bytes(real(item, *args))

    monkeypatch.setattr(codec._orjson, "dumps", counted)
    assert json.loads(dumps(value)) == value
    assert len(calls) == 2  # a big one after small ones: encoded, then encoded wrapped for its depth
    calls.clear()
    assert json.loads(dumps(value)) == value
    assert len(calls) == 1  # the next: encoded wrapped at once (before: twice, as every one)
    assert dumps({"small": [1, 2]}) == '{"small":[1,2]}'  # written wrapped too, which ends the run
    calls.clear()
    assert json.loads(dumps(value)) == value
    assert len(calls) == 2


def test_referents_self_check_and_its_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    assert getattr(codec, "_REFERENTS_OK", True)  # CPython's collector lists scalars too, as the look needs
    monkeypatch.setattr(codec, "_REFERENTS_OK", False, raising=False)  # elsewhere: the walk, as before
    with pytest.raises(ValueError, match="NaN"):
        dumps({"rows": ROWS, "x": math.nan})
    assert json.loads(dumps({"rows": ROWS})) == {"rows": ROWS}


def test_big_integers_go_to_the_standard_encoder_unconverted(monkeypatch: pytest.MonkeyPatch) -> None:
    value = {"ints": [2**100 + i for i in range(5000)], "rows": ROWS, "t": (1, 2)}

    def refuse(item: Any) -> Any:
        raise AssertionError(f"converted {type(item).__name__} node by node")

    monkeypatch.setattr(codec, "jsonable", refuse)
    monkeypatch.setattr(codec, "_check_tree", _no_walk)
    assert json.loads(dumps(value)) == {**value, "t": [1, 2]}


@pytest.mark.parametrize("value", [
    {1: "a", "2": "b"}, {"m": {True: [2**70]}}, [Point(2.0, 2**70)], {"k": (2**70, {"t": (1,)})},
    {"e": Level.TOP.name, "n": 2**70, "nested": [[{"a": None}]]},
], ids=repr)
def test_the_standard_encoders_path_writes_what_jsonable_made(value: Any) -> None:
    expected = json.dumps(codec.jsonable(value), separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected


def test_a_big_int_document_keeps_the_policy() -> None:
    with pytest.raises(ValueError, match="nested deeper than 128"):
        dumps({"rows": ROWS, "n": 2**70, "deep": _nested(MAX_JSON_DEPTH + 1)})
    assert dumps({"n": 2**70, "deep": _nested(MAX_JSON_DEPTH - 1)}) is not None
    with pytest.raises(ValueError, match="NaN and Infinity"):
        dumps({"rows": ROWS, "n": 2**70, "x": [math.nan]})
