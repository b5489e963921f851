"""dumps of a frame of the call paths (past the shortest size that can be too deep, under a few KiB: an answer with
a traceparent) counts its brackets at C speed, without a Python-level scan; the depth policy is the same on both
sides of that size (issue 10)."""

from __future__ import annotations

import pytest

from iii.protocol import codec

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ANSWER = {"type": "invocationresult", "invocation_id": "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11",
          "function_id": "bench::echo", "result": {"n": 1, "s": "hello", "pad": "x" * 80}, "traceparent": TRACEPARENT}


def _refuse(*args: object) -> object:
    raise AssertionError("a Python-level bracket scan of a small frame")


def test_answer_with_traceparent_takes_no_bracket_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    text = codec._orjson_dumps(ANSWER)  # the orjson path itself: dumps falls back to the standard encoder
    assert text is not None and len(text) >= codec._DEEP_MIN_LEN
    monkeypatch.setattr(codec, "_more_brackets_than", _refuse)
    assert codec.dumps(ANSWER) == text


@pytest.mark.parametrize("size", [1024, 2 * codec._LOOK_TEXT])  # counted in C, and by _more_brackets_than
def test_depth_policy_either_side_of_the_count(size: int) -> None:
    pad = "x" * size
    too_deep: object = 0
    for _ in range(codec.MAX_JSON_DEPTH + 1):
        too_deep = [too_deep]
    with pytest.raises(ValueError, match="deep"):
        codec.dumps({"pad": pad, "v": too_deep})
    deepest: object = 0
    for _ in range(codec.MAX_JSON_DEPTH - 1):  # the frame's own object is one more level
        deepest = [deepest]
    assert codec.loads(codec.dumps({"pad": pad, "v": deepest})) == {"pad": pad, "v": deepest}
    wide = [[1]] * 300  # 301 brackets, depth 3 with the frame's object
    assert codec.loads(codec.dumps({"pad": pad, "v": wide})) == {"pad": pad, "v": wide}
