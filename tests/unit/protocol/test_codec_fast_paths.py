"""The codec's small-document fast paths keep the policy: exact big integers (a long digit run anywhere in a
document of one scan window, bytes or str), and a lone surrogate in a str is a ValueError, not a crash."""

from __future__ import annotations

import pytest

from iii.protocol import codec


@pytest.mark.parametrize("as_str", [False, True])
def test_long_digit_runs_in_small_documents_stay_exact(as_str: bool) -> None:
    big = 2**70 + 1
    for doc in (f"[{big}]", f'{{"a":"x","n":{big}}}', f'{{"pad":"{"é" * 50}","n":{-big}}}'):
        raw = doc if as_str else doc.encode()
        value = codec.loads(raw)
        assert str(big) in codec.dumps(value)
    assert codec._has_long_digits("1" * 19) and not codec._has_long_digits("1" * 18)
    assert codec._has_long_digits(b"x" * (codec._SCAN_WINDOW - 19) + b"1" * 19)  # the last bytes of one window


def test_a_lone_surrogate_in_a_str_is_a_value_error() -> None:
    with pytest.raises(ValueError) as caught:
        codec.loads('["\ud800", 1]')
    assert not isinstance(caught.value, UnicodeError)  # the decoder's message, not one about building it


def test_a_wide_shallow_document_is_not_walked_but_a_deep_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = {"spans": [{"attributes": [{"key": f"k{i}", "value": {"intValue": i}}]} for i in range(512)]}
    real_walk = codec._check_tree

    def no_walk(value: object) -> None:
        raise AssertionError("walked a document orjson can vouch for")

    monkeypatch.setattr(codec, "_check_tree", no_walk)
    assert codec.loads(codec.dumps(wide)) == wide  # 1,537 brackets, depth 6: no Python walk
    monkeypatch.setattr(codec, "_check_tree", real_walk)
    deep: object = 1
    for _ in range(codec.MAX_JSON_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="deep"):
        codec.dumps(deep)
    with pytest.raises(ValueError):
        codec.dumps({"spans": [1.0, float("nan")]})
