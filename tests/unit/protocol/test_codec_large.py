"""codec.loads on big documents: a long digit run only sends a document to the exact (standard) decoder when it may be
an integer token orjson cannot hold (20+ digits, or "-" and 19+), a big document is scanned before it is parsed (one
parse, not two), and the policy (exact integers, no NaN/Infinity, 128 levels) holds on every path, bytes and str."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from iii.protocol import codec
from iii.protocol.codec import MAX_JSON_DEPTH, loads

WINDOW = 256 * 1024
# Dense numbers push a document past the scan window without making it "mostly text" (which goes to json anyway).
NUMBERS = "[" + ",".join(["123"] * (WINDOW // 4 + 10)) + "]"


def _no_exact(raw: Any) -> Any:
    raise AssertionError("parsed by the exact decoder")


def _enc(doc: str, as_str: bool) -> str | bytes:
    return doc if as_str else doc.encode()


def spans_frame(count: int) -> str:
    spans = [{"traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "call f", "kind": 2,
              "startTimeUnixNano": str(1_700_000_000_000_000_000 + i), "endTimeUnixNano": "1799999999999999999",
              "attributes": [{"key": "n", "value": {"intValue": "12345678901234567890123"}}], "status": {"code": 1}}
             for i in range(count)]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}, separators=(",", ":"))


@pytest.mark.parametrize("as_str", [False, True])
@pytest.mark.parametrize("count", [10, 3000])  # one scan window, and about 1 MiB
def test_digit_runs_in_strings_and_fractions_stay_on_orjson(monkeypatch: pytest.MonkeyPatch, as_str: bool,
                                                            count: int) -> None:
    # Before: any run of 19 digits (every OTLP timestamp) sent the document to the standard decoder, at 2-9x the time.
    doc = spans_frame(count)
    pad = NUMBERS if count > 10 else "[]"  # long fractions and exponents, written as they would come
    floats = f'{{"pad":{pad},"x":[0.0001234567890123456789,1.0000000000000000000000000001,-0.12345678901234567890123,' \
             f'9e-00000000000000000001,1E+000000000000000000000002]}}'
    expected = [json.loads(doc), json.loads(floats)]
    monkeypatch.setattr(codec, "_exact_loads", _no_exact)
    assert [loads(_enc(doc, as_str)), loads(_enc(floats, as_str))] == expected


INTEGERS = [2**63 - 1, 2**63, 2**64 - 1, -(2**63), 10**18, -(10**18), 999_999_999_999_999_999]  # orjson keeps these
BIG = [2**64, 10**19 * 2, -(2**63) - 1, -(10**19) + 1, 10**40, -(10**40), 2**70 + 1]  # it would make floats of these


@pytest.mark.parametrize("as_str", [False, True])
@pytest.mark.parametrize("big_doc", [False, True])
def test_integers_stay_exact_whatever_stands_before_them(as_str: bool, big_doc: bool) -> None:
    pad = NUMBERS if big_doc else "0"
    for number in INTEGERS + BIG:
        for before in ("[", ",", ":", " ", "\t", "\n", "\r"):
            inner = {"[": f"[{number}]", ",": f"[1,{number}]", ":": f'{{"n":{number}}}'}.get(before,
                                                                                            f"[{before}{number}]")
            doc = f"[{pad},{inner}]"
            value = loads(_enc(doc, as_str))
            assert repr(value) == repr(json.loads(doc)), (number, before)
        if not big_doc:
            assert repr(loads(_enc(str(number), as_str))) == repr(number)  # a document of one number
            assert repr(loads(_enc(f" {number} ", as_str))) == repr(number)


@pytest.mark.parametrize("as_str", [False, True])
def test_a_big_integer_across_each_window_boundary_is_exact(as_str: bool) -> None:
    big = -(10**25) - 7
    head = "[" + "7," * ((WINDOW - 30) // 2)
    for shift in range(0, 60):  # the separator and the digits on either side of the first window's end
        doc = head + " " * shift + str(big) + "," + NUMBERS + "]"
        assert loads(_enc(doc, as_str))[-2] == big, shift


@pytest.mark.parametrize("as_str", [False, True])
def test_a_big_document_holding_a_big_integer_is_parsed_once(monkeypatch: pytest.MonkeyPatch, as_str: bool) -> None:
    # Before: orjson parsed it first (a few MiB: ~10 ms and 12x the document), then the exact decoder again.
    monkeypatch.setattr(orjson, "loads", _no_exact)
    doc = f'{{"pad":{NUMBERS},"n":{2**80}}}'
    assert loads(_enc(doc, as_str))["n"] == 2**80


def _number(rnd: random.Random) -> str:
    kind = rnd.randrange(5)
    sign = rnd.choice(["", "-"])
    if kind == 0:
        digits = rnd.randrange(1, 26)
        return sign + str(rnd.randrange(1, 10)) + "".join(rnd.choice("0123456789") for _ in range(digits - 1))
    if kind == 1:
        return sign + str(rnd.choice([2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1, 2**64, 10**19, 10**20 - 1]))
    whole = rnd.choice(["0", str(rnd.randrange(1, 10**rnd.randrange(1, 22)))])
    fraction = "." + "".join(rnd.choice("0123456789") for _ in range(rnd.randrange(1, 30))) if kind != 4 else ""
    exponent = (rnd.choice("eE") + rnd.choice(["", "+", "-"]) + "0" * rnd.randrange(0, 22) + str(rnd.randrange(0, 99))
                if kind >= 3 else "")
    return sign + whole + fraction + exponent


def _text(rnd: random.Random, depth: int = 0) -> str:
    ws = rnd.choice(["", "", " ", "\n", "\t", "\r\n "])
    kind = rnd.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return ws + _number(rnd)
    if kind == 1:
        inside = "".join(rnd.choice(["7", "12345678901234567890", ", ", "-", ":", " ", "a", ".", "[", "é"])
                         for _ in range(rnd.randrange(0, 8)))
        return ws + json.dumps(inside, ensure_ascii=rnd.random() < 0.5)
    if kind == 2:
        return ws + rnd.choice(["true", "false", "null"])
    if kind == 3:
        return ws + "[" + ",".join(_text(rnd, depth + 1) for _ in range(rnd.randrange(0, 5))) + ws + "]"
    items = [f'{ws}"k{i}"{ws}:{_text(rnd, depth + 1)}' for i in range(rnd.randrange(0, 5))]
    return ws + "{" + ",".join(items) + ws + "}"


@pytest.mark.parametrize("as_str", [False, True])
def test_random_documents_decode_as_the_standard_decoder_does(as_str: bool) -> None:
    # Every value equal to json.loads's in type too (repr tells 1 from 1.0 and keeps key order), small and big.
    rnd = random.Random(20260610)
    docs = [_text(rnd) for _ in range(3000)]
    for doc in docs:
        try:
            expected = json.loads(doc)
        except ValueError:  # an exponent past a double: both refuse it
            with pytest.raises(ValueError):
                loads(_enc(doc, as_str))
            continue
        assert repr(loads(_enc(doc, as_str))) == repr(expected), doc
    valid = [doc for doc in docs if "e" not in doc.lower() or _parses(doc)]
    big = "[" + NUMBERS + "," + ",".join(valid) + "]"
    assert repr(loads(_enc(big, as_str))) == repr(json.loads(big))


def _parses(doc: str) -> bool:
    try:
        json.loads(doc)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("as_str", [False, True])
@pytest.mark.parametrize("leaf", ["1", str(2**70)])  # orjson, and the exact decoder
def test_big_documents_keep_the_policy(as_str: bool, leaf: str) -> None:
    deepest = "[" * MAX_JSON_DEPTH + leaf + "]" * MAX_JSON_DEPTH
    too_deep = "[" * (MAX_JSON_DEPTH + 1) + leaf + "]" * (MAX_JSON_DEPTH + 1)
    assert loads(_enc(f"[{NUMBERS},{deepest[1:-1]}]", as_str)) is not None
    with pytest.raises(ValueError, match="nested deeper than 128"):
        loads(_enc(f"[{NUMBERS},{too_deep[1:-1]}]", as_str))
    for bad in ("NaN", "-Infinity", "1e400", "-1" + "0" * 400 + ".5"):
        with pytest.raises(ValueError, match="NaN and Infinity"):
            loads(_enc(f"[{NUMBERS},{leaf},{bad}]", as_str))
    with pytest.raises(ValueError):
        loads(_enc(f"[{NUMBERS},{leaf},]", as_str))


@pytest.mark.parametrize("big_int", [False, True])  # orjson's path, and the standard encoder's
def test_a_big_wide_document_is_written_without_a_walk(monkeypatch: pytest.MonkeyPatch, big_int: bool) -> None:
    # Its brackets are counted by find() stopping at 129 (two count() passes took 2.3 ms per 4 MiB), its depth proven
    # at C speed; only a deep one is walked (to name the problem).
    real_walk = codec._check_tree

    def refuse(value: Any) -> None:
        raise AssertionError("walked a wide document")

    value: dict[str, Any] = {"items": [{"a": [i]} for i in range(20_000)], "n": 2**70 if big_int else 1}
    monkeypatch.setattr(codec, "_check_tree", refuse)
    assert json.loads(codec.dumps(value)) == value
    monkeypatch.setattr(codec, "_check_tree", real_walk)
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper than 128"):
        codec.dumps({"items": value["items"], "deep": deep, "n": value["n"]})
