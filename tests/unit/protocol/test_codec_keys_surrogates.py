"""``dumps`` writes object keys as ``json.dumps`` (the reference SDK's encoder) does, and refuses unpaired
surrogates by name.

Before: every non-string key went through ``str()`` (``{True: 1}`` went out as ``{"True":1}``, ``{None: 1}`` as
``{"None":1}``, a NaN key as ``"nan"``, and a tuple key was accepted), and a lone surrogate was written raw into the
text, which has no UTF-8 form: the frame failed later, far from its cause, or an engine dropped it.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest

from iii.protocol.client import ClientSession
from iii.protocol.codec import dumps


class Colour(str, enum.Enum):  # noqa: UP042 - the mixin whose str() is "Colour.RED", not its text
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize("value", [
    {True: 1, False: 2}, {None: 1}, {1: 1, -7: 2}, {1.5: 2, 1e300: 3}, {2**70: 1}, {Colour.RED: 1}, {Level.HIGH: 1},
    {"a": {None: [{True: "x"}]}},
], ids=repr)
def test_non_string_keys_are_written_as_json_dumps_writes_them(value: dict[Any, Any]) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_a_key_json_cannot_write_is_refused_by_type() -> None:
    with pytest.raises(TypeError, match="keys must be str, int, float, bool or None, not tuple"):
        dumps({(1, 2): 1})
    with pytest.raises(ValueError, match="NaN and Infinity"):
        dumps({float("nan"): 1})


@pytest.mark.parametrize("value", ["\ud800", {"k": "ok \udfff"}, {"\ud83d": 1}, ["é", "\ud800x"]], ids=repr)
def test_an_unpaired_surrogate_is_refused_naming_it(value: Any) -> None:
    with pytest.raises(ValueError, match="unpaired surrogate"):
        dumps(value)


def test_a_paired_surrogate_text_is_fine() -> None:
    assert dumps({"k": "😀 é"}) == '{"k":"😀 é"}'


def test_a_handler_result_with_an_unpaired_surrogate_is_answered_as_an_error() -> None:
    answer = ClientSession().answer("i1", "f", result={"text": "\ud800"}, generation=0)
    assert answer is not None
    body = json.loads(answer)
    assert body["error"]["code"] == "result_not_sent" and "unpaired surrogate" in body["error"]["message"]
    answer.encode("utf-8")  # the answer itself can go on the wire


@pytest.mark.parametrize(("value", "pair"), [
    ({1: "a", "1": "b"}, "1 and '1'"), ({"null": 1, None: 2}, "'null' and None"),
    ({True: 1, "true": 2}, "True and 'true'"),
    ({"x": [{1.5: 1, "1.5": 2}]}, "1.5 and '1.5'"), ({2**70: 1, str(2**70): 2}, f"{2**70} and '{2**70}'"),
], ids=repr)
def test_two_keys_that_are_one_json_key_are_refused_not_one_dropped(value: dict[Any, Any], pair: str) -> None:
    # Before, the second key's value silently replaced the first's ({1: "a", "1": "b"} went out as {"1":"b"}); the
    # reference SDK's json.dumps writes the key twice, and every JSON reader keeps only one of them.
    with pytest.raises(ValueError, match=f"object keys {pair} are both the JSON key .*: one value would be lost"):
        dumps(value)


def test_a_handler_result_with_two_keys_that_are_one_json_key_is_answered_as_an_error() -> None:
    answer = ClientSession().answer("i1", "f", result={1: "a", "1": "b"}, generation=0)
    assert answer is not None
    body = json.loads(answer)
    assert body["error"]["code"] == "result_not_sent" and "both the JSON key '1'" in body["error"]["message"]
