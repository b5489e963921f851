"""A lone surrogate escape (``"\\ud800"``: half a UTF-16 pair, no other half) is refused alike on every path of
``loads``, with the same :class:`UnpairedSurrogateError`, as orjson and serde_json (the production engine) refuse it.

Before: orjson's path (small documents) refused it, while the standard decoder's path (a document holding an integer
beyond 64 bits, or a big mostly-text one) returned a str no UTF-8 can hold; a str document holding a surrogate
character went the same way. So one frame was taken or refused depending on unrelated content.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from iii.protocol import codec
from iii.protocol.codec import UnpairedSurrogateError, loads

PAD = "x" * (600 * 1024)  # a big document that is mostly text: the standard decoder's path
NUMBERS = ",".join(["123"] * 70_000)  # a big document that is not: orjson's big-document path


def _paths(inner: str) -> dict[str, str]:
    """One JSON value ``inner`` put in documents that take each path of loads."""
    return {
        "small": f'{{"a":{inner}}}',
        "big int": f'{{"a":{inner},"n":{2**70}}}',
        "mostly text": f'{{"pad":"{PAD}","a":{inner}}}',
        "big": f'{{"pad":[{NUMBERS}],"a":{inner}}}',
        "big and big int": f'{{"pad":[{NUMBERS}],"a":{inner},"n":{-(2**70)}}}',
    }


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        call()
    except UnpairedSurrogateError as exc:
        return "refused", f"{exc.char} {exc.position}"
    return "taken", ""


LONE = ['"\\ud800"', '"\\udbff x"', '"\\uDC00"', '"a\\udfff"', '"\\ud800\\u0041"', '"\\ud83d\\ude00\\ude00"',
        '"\\ud800\\ud800\\udc00"', '"\\\\\\ud800"', '"\\\\ud800\\udc00"', '{"\\ud800":1}', '["ok","\\uD83D"]']
FINE = ['"\\ud83d\\ude00"', '"\\uD83D\\uDE00"', '"\\\\ud800"', '"\\\\\\\\ud800"', '"\\\\\\ud83d\\ude00"',
        '"\\ud7ff\\ue000"', '{"\\ud83d\\ude00":"\\u00e9"}', '"\\\\\\\\"']


@pytest.mark.parametrize("inner", LONE)
@pytest.mark.parametrize("as_str", [False, True])
def test_a_lone_surrogate_escape_is_refused_alike_on_every_path(inner: str, as_str: bool) -> None:
    messages = set()
    for path, doc in _paths(inner).items():
        raw: str | bytes = doc if as_str else doc.encode()
        with pytest.raises(UnpairedSurrogateError, match="unpaired surrogate escape") as caught:
            loads(raw)
        assert caught.value.escape, path
        start = doc.index('"a":') + 4
        messages.add((caught.value.char, caught.value.position - start))  # the same escape, wherever it stands
        with pytest.raises(orjson.JSONDecodeError, match="surrogate"):
            orjson.loads(raw)  # the policy is orjson's (and serde_json's)
    assert len(messages) == 1, messages


@pytest.mark.parametrize("inner", FINE)
def test_pairs_and_escaped_backslashes_are_taken_on_every_path(inner: str) -> None:
    expected = json.loads(inner)
    for path, doc in _paths(inner).items():
        for raw in (doc, doc.encode()):
            assert loads(raw)["a"] == expected, path


def _piece(rnd: random.Random) -> str:
    return rnd.choice(["\\ud83d", "\\ude00", "\\uD800", "\\uDC00", "\\udbff", "\\udfff", "\\\\", "\\\\ud800",
                       "\\u0041", "\\ud7ff", "\\ue000", "\\n", "x", "\\\\\\", "ud800", "\\u00e9", "\\\""])


def test_random_escapes_are_refused_exactly_where_they_decode_to_a_lone_surrogate() -> None:
    # The oracle: the standard decoder keeps a lone surrogate in the str it returns (a pair becomes one character).
    rnd = random.Random(20261201)
    seen = {"refused": 0, "taken": 0}
    for _ in range(3000):
        text = "".join(_piece(rnd) for _ in range(rnd.randrange(1, 7)))
        if text.endswith("\\") and not text.endswith("\\\\"):
            continue
        inner = f'"{text}"'
        try:
            decoded = json.loads(inner)
        except ValueError:
            continue  # "\\\\\\" + quote: not a string
        lone = any(0xD800 <= ord(ch) <= 0xDFFF for ch in decoded)
        small = _outcome(lambda inner=inner: loads(f"[{inner}]"))
        exact = _outcome(lambda inner=inner: codec._exact_loads(f"[{inner}]"))
        assert small == exact, inner
        assert small[0] == ("refused" if lone else "taken"), inner
        try:
            orjson.loads(f"[{inner}]")
        except orjson.JSONDecodeError:
            assert lone, inner  # orjson refuses exactly these too
        else:
            assert not lone, inner
        seen[small[0]] += 1
    assert min(seen.values()) > 300, seen


@pytest.mark.parametrize("path", ["small", "big int", "mostly text", "big"])
def test_a_str_document_holding_a_surrogate_character_is_refused_alike(path: str) -> None:
    doc = _paths('"ok \ud800"')[path]
    with pytest.raises(UnpairedSurrogateError, match="unpaired surrogate '\\\\ud800'") as caught:
        loads(doc)
    assert not caught.value.escape
    assert caught.value.position == doc.index("\ud800")
    assert loads(doc.replace("\ud800", "\U0001f600"))["a"] == "ok \U0001f600"  # wide text without one is fine


def test_a_frame_with_a_lone_surrogate_escape_is_a_wire_error_wherever_it_goes() -> None:
    frame = ('{"type":"invokefunction","invocation_id":"8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11","function_id":"f",'
             '"data":{"text":"\\ud800","n":%s}}')
    for n in ("1", str(2**70)):
        with pytest.raises(codec.WireError, match="unpaired surrogate escape") as caught:
            codec.decode(frame % n)
        assert caught.value.invocation_id == "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"  # still answerable


def _surrogate_values() -> list[Any]:
    return [
        {"text": "\ud800"},  # orjson refuses it, the standard encoder writes it: refused after
        {"text": "\ud800", "n": 2**70},  # the standard encoder's path from the start (a big integer)
        {"text": "\ud800", 1: "non-str key"},  # so too (a key orjson cannot write)
        {"text": "\ud800", "pad": ["x" * 100] * 2000},  # a big document
        ("\ud800",),
    ]


@pytest.mark.parametrize("without_orjson", [False, True])
def test_dumps_refuses_a_lone_surrogate_alike_on_every_path(monkeypatch: pytest.MonkeyPatch,
                                                            without_orjson: bool) -> None:
    if without_orjson:
        monkeypatch.setattr(codec, "_orjson", None)
    for value in _surrogate_values():
        with pytest.raises(UnpairedSurrogateError, match="unpaired surrogate '\\\\ud800'") as caught:
            codec.dumps(value)
        assert caught.value.char == "\ud800" and not getattr(caught.value, "escape", False)
        text = json.dumps(value if not isinstance(value, dict) else {str(k): v for k, v in value.items()},
                          separators=(",", ":"), ensure_ascii=False)
        assert caught.value.position == text.index("\ud800")  # a character of the text it would have written
