"""loads on a document of one scan window (every frame of the hot paths) makes one translate pass that answers
both the long-digit and the bracket question, and skips the depth question for documents too short to be deep;
the policy is unchanged at each boundary (issue 10)."""

from __future__ import annotations

import pytest

from iii.protocol import codec

FRAME = ('{"type":"invokefunction","function_id":"stream::update",'
         '"invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11",'
         '"data":{"stream_name":"s","group_id":"g","item_id":"i","ops":[{"type":"increment","path":"n","by":1}]},'
         '"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}')


def _refuse(*args: object) -> object:
    raise AssertionError("a separate scan of a one-window document")


@pytest.mark.parametrize("as_str", [True, False])
def test_one_window_document_takes_one_pass(monkeypatch: pytest.MonkeyPatch, as_str: bool) -> None:
    monkeypatch.setattr(codec, "_has_long_digits", _refuse)
    monkeypatch.setattr(codec, "_more_brackets_than", _refuse)
    for doc in (FRAME, '{"n":1,"s":"x"}', '[' * 20 + ']' * 20):
        raw = doc if as_str else doc.encode()
        assert codec.loads(raw) == codec._DECODER.decode(doc)


@pytest.mark.parametrize("as_str", [True, False])
def test_policy_at_the_boundaries(as_str: bool) -> None:
    def enc(doc: str) -> str | bytes:
        return doc if as_str else doc.encode()

    deepest = "[" * codec.MAX_JSON_DEPTH + "]" * codec.MAX_JSON_DEPTH  # 256 chars: too short to be too deep
    assert codec.loads(enc(deepest)) is not None
    too_deep = "[" * (codec.MAX_JSON_DEPTH + 1) + "]" * (codec.MAX_JSON_DEPTH + 1)  # exactly _DEEP_MIN_LEN
    assert len(too_deep) == 2 * (codec.MAX_JSON_DEPTH + 1)  # the shortest document that can be too deep
    with pytest.raises(ValueError, match="deep"):
        codec.loads(enc(too_deep))
    with pytest.raises(ValueError, match="deep"):
        codec.loads(enc('{"a":' + too_deep + "}"))
    wide = "[" + ",".join(["[1]"] * 300) + "]"  # 301 brackets, depth 2: counted, then vouched for by orjson
    assert codec.loads(enc(wide)) == [[1]] * 300
    big = 2**70 + 1
    for doc in (f"[{big}]", f'{{"pad":"{"x" * 300}","n":{big}}}', f'{{"n":{-big},"pad":"{"[" * 200}"}}'):
        assert codec.dumps(codec.loads(enc(doc))) == doc.replace(" ", "")
    assert codec.loads(enc('{"id":"1234567890123456789012345"}')) == {"id": "1234567890123456789012345"}
    assert codec.loads(enc("[18446744073709551615]")) == [2**64 - 1]  # 20 digits, still in orjson's range
    for bad in ("[NaN]", "[Infinity]", "[1e400]", "[1,", '{"a":-Infinity}'):
        with pytest.raises(ValueError):
            codec.loads(enc(bad))
    with pytest.raises(ValueError):
        codec.loads(enc('[' + "9" * 400 + "e999]"))  # a long run that overflows a double: refused, not inf


def test_dumps_of_a_short_document_counts_no_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_more_brackets_than", _refuse)
    assert codec.dumps({"old_value": {"n": 1}, "new_value": {"n": 2}}) == '{"old_value":{"n":1},"new_value":{"n":2}}'
    with pytest.raises(ValueError, match="NaN"):
        codec.dumps({"x": [float("inf")]})
