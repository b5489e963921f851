"""Tuples in values written by :func:`iii.protocol.codec.dumps`.

orjson 3.12.0 and 3.13.0 do not count tuples toward their nesting limit: a chain of a few thousand nested tuples
corrupted the heap and ended the process, and tuples nested past 128 levels passed the codec's depth proofs. The
codec finds out once whether the installed orjson counts them; when it does not, only values of plain dicts, lists
and scalars go to orjson, the rest to the standard encoder."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from iii.protocol import codec
from iii.protocol.codec import MAX_JSON_DEPTH, TOO_DEEP, dumps, jsonable


def chain(levels: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(levels):
        value = (value,)
    return value


@pytest.fixture(params=["orjson counts tuples", "orjson does not count them"])
def counting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    counts = request.param == "orjson counts tuples"
    if counts and not codec._ORJSON_COUNTS_TUPLES:
        pytest.skip("the installed orjson does not count tuples")
    monkeypatch.setattr(codec, "_ORJSON_COUNTS_TUPLES", counts)
    return counts


def test_the_installed_orjson_is_probed_right() -> None:
    assert codec._ORJSON_COUNTS_TUPLES is (not orjson.__version__.startswith(("3.12.", "3.13.")))


def test_a_long_chain_of_tuples_is_refused_without_harm_to_the_process() -> None:
    # a subprocess: with the orjson versions that do not count tuples, the old code ended the process here
    script = (
        "from iii.protocol import codec\n"
        "value = 0\n"
        "for _ in range(20000):\n"
        "    value = (value,)\n"
        "for counts in (codec._ORJSON_COUNTS_TUPLES, False):\n"
        "    codec._ORJSON_COUNTS_TUPLES = counts\n"
        "    for _ in range(20):\n"
        "        try:\n"
        "            codec.dumps({'data': [value]})\n"
        "        except ValueError as exc:\n"
        "            assert str(exc) == codec.TOO_DEEP, exc\n"
        "        else:\n"
        "            raise AssertionError('written')\n"
        "print('refused')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "refused"), done.stderr[-2000:]


@pytest.mark.parametrize(("wrap", "extra"), [(lambda v: v, 0), (lambda v: {"a": [v]}, 2), (lambda v: [{"b": v}], 2)],
                         ids=["bare", "in-object", "in-list"])
def test_tuples_count_toward_the_depth_limit(counting: bool, wrap: Any, extra: int) -> None:
    deepest = MAX_JSON_DEPTH - extra
    assert dumps(wrap(chain(deepest))) == dumps(wrap(jsonable(chain(deepest))))
    for levels in (deepest + 1, MAX_JSON_DEPTH + 1, 300, 2000):
        with pytest.raises(ValueError, match=TOO_DEEP):
            dumps(wrap(chain(levels)))


class _HidingDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return iter(())

    def __iter__(self) -> Iterator[Any]:
        return iter(())


@dataclasses.dataclass
class _Point:
    x: Any
    y: Any


@pytest.mark.parametrize("value", [
    {"p": (1, 2), "q": [(3, (4, "five")), None]},
    (1.5, None, True, "s"),
    _Point((1, 2), [3]),
    _HidingDict(k=(1, 2)),
    [{"a": [1, 2, {"b": None}]}, 2**70, "é"],
], ids=["tuples", "tuple-of-scalars", "dataclass", "dict-subclass", "plain"])
def test_both_paths_write_the_same_text(counting: bool, value: Any) -> None:
    written = dumps(value)
    assert written == dumps(jsonable(value))  # jsonable: the standard encoder's plain form, tuples as lists


@pytest.mark.parametrize("value", [_HidingDict(k=float("nan")), [(1, float("inf"))], _Point(1, (float("nan"),))],
                         ids=["dict-subclass", "tuple", "dataclass"])
def test_a_nan_is_refused_on_both_paths(counting: bool, value: Any) -> None:
    with pytest.raises(ValueError, match="NaN and Infinity"):
        dumps(value)


def test_only_plain_values_pass_the_look() -> None:
    assert codec._json_kinds_only({"a": [1, "s", None, 1.5, True, {"b": []}]})
    assert codec._json_kinds_only(jsonable(chain(MAX_JSON_DEPTH)))
    assert not codec._json_kinds_only(jsonable(chain(MAX_JSON_DEPTH + 2)))  # the encoder tells how deep
    assert not codec._json_kinds_only({"a": [1, (2,)]})
    assert not codec._json_kinds_only([_HidingDict()])
    assert not codec._json_kinds_only({"a": _Point(1, 2)})


def test_jsonable_reads_a_subclass_from_its_storage() -> None:
    assert jsonable(_HidingDict(k=(1, 2))) == {"k": [1, 2]}
