"""``Encoded``: a value encoded once and spliced into frames. The frame must be the one encoding the value there would
make, and one its receiver can read: the value sits a level down in the frame, so it may nest one level less."""

from __future__ import annotations

from typing import Any

import pytest

from iii.protocol.codec import MAX_JSON_DEPTH, Encoded, loads
from iii.protocol.frames import invoke_function


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("value", [None, 0, "x\"y", {"a": [1, {"b": None}]}, [], {}, "data\":null", 2**70])
@pytest.mark.parametrize("invocation_id", [None, "i-1", ',"data":null'])
def test_a_spliced_frame_is_the_frame_encoded_in_place(value: Any, invocation_id: str | None) -> None:
    plain = invoke_function(',"data":null', value, invocation_id=invocation_id, traceparent="t", baggage="b")
    spliced = invoke_function(',"data":null', Encoded(value), invocation_id=invocation_id, traceparent="t",
                              baggage="b")
    assert spliced == plain
    assert loads(spliced)["data"] == value


def test_an_encoded_value_nests_one_level_less_than_a_frame() -> None:
    deepest = Encoded(_nested(MAX_JSON_DEPTH - 1))
    frame = invoke_function("f", deepest)
    assert loads(frame)["data"] == _nested(MAX_JSON_DEPTH - 1)  # the receiver reads it
    with pytest.raises(ValueError, match="nested deeper"):
        Encoded(_nested(MAX_JSON_DEPTH))  # spliced, its frame would be one level past what a receiver reads
    with pytest.raises(ValueError, match="nested deeper"):
        loads('{"data":' + "[" * MAX_JSON_DEPTH + "1" + "]" * MAX_JSON_DEPTH + "}")


def test_its_value_is_the_value_it_was_made_from() -> None:
    # shared, not decoded again: a copy per in-process receiver cost 7 MB of objects per delivery of a 1 MB message
    message = {"a": [1]}
    once = Encoded(message)
    assert once.value() is message
    assert once.text == '{"a":[1]}'
