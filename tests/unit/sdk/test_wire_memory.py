"""What parsing one big frame costs in memory beyond its result: a big mostly-text document skips orjson's
up-front buffer, and the scan for long digit runs is windowed."""

from __future__ import annotations

import tracemalloc

import pytest

from iii.wire import loads

SIZE = 4 * 1024 * 1024


@pytest.mark.parametrize("as_bytes", [False, True])
def test_big_frame_parse_peak_is_about_its_result(as_bytes: bool) -> None:
    text = '{"type":"invokefunction","function_id":"f","data":"' + "x" * SIZE + '"}'
    raw: str | bytes = text.encode() if as_bytes else text
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        value = loads(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(value["data"]) == SIZE
    # The parsed string is SIZE bytes (bytes are decoded to text first: one more). orjson's reader allocated about
    # 13 times the document up front, and the digit scan copied the whole document twice.
    limit = (2 if as_bytes else 1) * SIZE + 1024 * 1024
    assert peak < limit, f"parsing a {SIZE}-byte frame peaked at {peak} bytes"


@pytest.mark.parametrize("at", [0, 256 * 1024 - 10, 256 * 1024 + 5, 3 * 256 * 1024 - 1])
def test_long_digit_run_found_across_scan_windows(at: int) -> None:
    # A 25-digit integer anywhere, including across a window boundary, is kept exact (never a float).
    big = 10**24 + 7
    pad = "y" * at
    doc = '{"pad":"' + pad + '","n":' + str(big) + "}"
    assert loads(doc)["n"] == big
    assert loads(doc.encode())["n"] == big


def test_big_text_document_keeps_the_json_policy() -> None:
    # The lean path refuses what the orjson path refuses.
    pad = "x" * (1024 * 1024)
    for bad in ('{"pad":"' + pad + '","n":NaN}', '{"pad":"' + pad + '","n":1e999}',
                '{"pad":"' + pad + '","d":' + "[" * 200 + "]" * 200 + "}"):
        with pytest.raises(ValueError, match=r"NaN and Infinity|nested deeper"):
            loads(bad)
