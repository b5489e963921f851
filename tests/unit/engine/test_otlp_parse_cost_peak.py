"""parse_cost, the estimate max_frame_parse_bytes is checked against, is at or above what parsing a frame really takes
at its peak (resident memory of a fresh process, as the bound's 243 MB for 8 MiB of ``{}`` was measured), shape by
shape; and a frame of real spans of the same size still fits under the default bound.

Before: one object of 381k unique keys with int values (8 MiB) was estimated at 23 MiB while its parse peaked at
84 MiB; dicts of ints, big ints, floats, short numbers and strings with escapes were under-estimated as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from iii_engine.modules.observability.otlp import CostlyFrameError, check_parse_cost, parse_cost
from iii_engine.modules.observability.settings import ObservabilitySettings

ROOT = Path(__file__).resolve().parents[3]
SIZE = 8 * 1024 * 1024 - 64

# Each shape: (head, one item as a %-format of its index, tail); items are repeated up to SIZE bytes.
SHAPES: dict[str, tuple[bytes, bytes, bytes]] = {
    "unique keys, int values": (b"{", b'"k%07d":1000000000', b"}"),
    "unique keys, float values": (b"{", b'"%x":1e1', b"}"),
    "unique keys, -6": (b"{", b'"%x":-6', b"}"),
    "small dicts": (b"[", b'{"%x":0}', b"]"),
    "ints": (b"[", b"1%09d", b"]"),
    "three-digit ints": (b"[", b"3%02d", b"]"),
    "big ints": (b"[", b"1%020d", b"]"),
    "floats": (b"[", b"%d.5", b"]"),
    "nested arrays": (b"[", b"[" * 120 + b"]" * 120, b"]"),
    "zeros": (b"[", b"0", b"]"),
    "true and null": (b"[", b"true,null", b"]"),
    "one-character strings": (b"[", b'"a"', b"]"),
    "strings with escapes": (b"[", b'"' + b"a\\n" * 40 + b'"', b"]"),
    "unicode escapes": (b"[", b'"' + b"\\u20ac" * 20 + b'"', b"]"),
    "an emoji in each string": (b"[", b'"' + b"a" * 200 + "\U0001f600".encode() + b'"', b"]"),
    "an escaped emoji after ascii": (b'["', b"a" * 1000, b'\\ud83d\\ude00"]'),
    "empty arrays and a big int": (b"[100000000000000000000,", b"[]", b"]"),
    "text holding brackets": (b"[", b'"' + b"{'n': [0, 1]}, " * 100 + b'\\"%d\\\\"', b"]"),
    # one string: JSON text (escaped quotes) with CJK characters in it
    "wide characters in JSON text": (b'["', '{\\"user\\": \\"u%d\\", \\"msg\\": \\"\u4f60\u597d\\"}, '.encode(), b'"]'),
    "many short wide strings": (b"[", '"\u4f60%d"'.encode(), b"]"),
    "many short strings, one astral": ('["\U0001f600",'.encode(), b'"a%d"', b"]"),
    # 129 brackets and a 21-digit int: the exact decoder, then the depth and NaN walk over 2 million floats
    "floats after many brackets and a big int": (b"[" + b"[]," * 129 + b"100000000000000000000,", b"1.5", b"]"),
}

_PEAK = textwrap.dedent("""
    import json, sys
    from iii.wire import loads
    from tests.unit.engine.test_otlp_parse_cost_peak import frame

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    body = frame(sys.argv[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from here
    before = status("VmRSS")
    parsed = loads(body)
    print(json.dumps({"bytes": len(body), "peak": status("VmHWM") - before}))
""")


def frame(shape: str) -> bytes:
    """A document of about 8 MiB of ``shape`` (a key of :data:`SHAPES`)."""
    head, item, tail = SHAPES[shape]
    items, room = [], SIZE - len(head) - len(tail)
    while True:
        one = item % len(items) if b"%" in item else item
        if len(one) + 1 > room:
            return head + b",".join(items) + tail
        items.append(one)
        room -= len(one) + 1


def parse_peak(shape: str) -> dict[str, Any]:
    """How much a fresh process's resident memory peaked while parsing :func:`frame` of ``shape``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PEAK, shape], capture_output=True, text=True, timeout=28,
                          check=False, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_estimate_bounds_the_peak_of_the_parse(shape: str) -> None:
    body = frame(shape)
    measured = parse_peak(shape)
    assert measured["bytes"] == len(body) > 7 * 1024 * 1024
    # before, for unique keys with int values: 24_447_168 < 87_883_776
    assert parse_cost(body) >= measured["peak"], (shape, parse_cost(body), measured)


def spans_frame(count: int) -> bytes:
    """An OTLP frame of ``count`` spans with ten string attributes each (about 850 bytes a span)."""
    spans = [{"traceId": "%032x" % (i + 1), "spanId": "%016x" % (i + 1), "name": f"pk-{i}",
              "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000", "kind": 2,
              "attributes": [{"key": f"attr.{k}", "value": {"stringValue": f"value-{i}-{k}"}} for k in range(10)],
              "status": {"code": 1}} for i in range(count)]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                          "scopeSpans": [{"scope": {"name": "pk"}, "spans": spans}]}]}).encode()


def test_8_mb_of_real_spans_fits_under_the_default_bound() -> None:
    body = spans_frame(9500)
    assert len(body) > 8_000_000
    check_parse_cost(body, ObservabilitySettings().max_frame_parse_bytes)  # no CostlyFrameError


def test_a_frame_of_unique_keys_over_the_bound_is_refused() -> None:
    body = frame("unique keys, int values")
    # the parse peaks near 84 MiB (test above); before, the estimate was 23 MiB and a 64 MiB bound let it through
    with pytest.raises(CostlyFrameError, match="whose parse would hold about"):
        check_parse_cost(body, 64 * 1024 * 1024)


def test_a_logs_frame_of_long_text_bodies_fits_under_the_default_bound() -> None:
    # the SDK's logs of a logger.info("rows: %s", rows): brackets, colons and commas inside strings open no value
    body_text = "rows: " + str([{"n": i % 10} for i in range(1200)])
    records = [{"timeUnixNano": "1", "observedTimeUnixNano": "1", "severityNumber": 9, "severityText": "INFO",
                "body": {"stringValue": body_text},
                "attributes": [{"key": "http.route", "value": {"stringValue": "/orders"}}]} for _ in range(512)]
    body = json.dumps({"resourceLogs": [{"resource": {"attributes": []},
                                         "scopeLogs": [{"scope": {"name": "app"}, "logRecords": records}]}]}).encode()
    assert len(body) > 6_000_000
    # before: CostlyFrameError: a frame of 6250607 bytes whose parse would hold about 143377928 bytes (over 134217728)
    check_parse_cost(body, ObservabilitySettings().max_frame_parse_bytes)
    assert parse_cost(body) < 32 * 1024 * 1024  # 6 MB of strings, not 600k dicts


def test_an_8_mb_frame_of_logs_with_twenty_attributes_each_fits_under_the_default_bound() -> None:
    # the reference SDK caps no frame: 8 MiB (max_frame_bytes) of dense log records peaks near 109 MiB resident;
    # before: CostlyFrameError at the 128 MiB default (estimated at 137 MiB)
    records = [{"timeUnixNano": str(1700000000000000000 + i), "observedTimeUnixNano": "1700000000000000000",
                "severityNumber": 9, "severityText": "INFO", "body": {"stringValue": f"event {i}"},
                "traceId": "%032x" % (i + 1), "spanId": "%016x" % (i + 1),
                "attributes": [{"key": f"attr.{k}", "value": {"stringValue": f"v{i}-{k}"}} for k in range(20)]}
               for i in range(6300)]
    body = json.dumps({"resourceLogs": [{"resource": {"attributes": []},
                                         "scopeLogs": [{"scope": {"name": "app"}, "logRecords": records}]}]},
                      separators=(",", ":")).encode()
    assert 7_000_000 < len(body) <= ObservabilitySettings().max_frame_bytes, len(body)
    check_parse_cost(body, ObservabilitySettings().max_frame_parse_bytes)


def test_wide_characters_among_escaped_quotes_are_counted_in_one_quick_pass() -> None:
    # one string of 16 runs of escaped quotes, each followed by the escape of a euro sign: each wide character
    # used to step over every escaped quote of its string, one Python call each (17 s for this frame, 18 min for
    # 1024 runs), and was charged the whole frame twice over (so it was refused, too)
    runs = 16
    body = b'["' + (b'\\"' * ((SIZE // runs - 6) // 2) + b"\\u20ac") * runs + b'"]'
    started = time.perf_counter()
    check_parse_cost(body, ObservabilitySettings().max_frame_parse_bytes)
    took = time.perf_counter() - started
    assert took < 2.0, took


def test_a_log_body_of_json_text_with_some_wide_characters_fits_under_the_default_bound() -> None:
    text = json.dumps([{"user": f"u{i}", "msg": "\u4f60\u597d" if i % 100 == 0 else "hello"} for i in range(40000)],
                      ensure_ascii=False)
    frame_ = {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [
        {"timeUnixNano": "1700000000000000000", "severityNumber": 9, "body": {"stringValue": text}}]}]}]}
    body = json.dumps(frame_, ensure_ascii=False).encode()
    # its parse peaks near 23 MiB; before, estimated at 1363 MiB: each of the 800 wide characters was charged the
    # whole body twice over, from the escaped quote before it
    check_parse_cost(body, ObservabilitySettings().max_frame_parse_bytes)
    assert parse_cost(body) < 64 * 1024 * 1024, parse_cost(body)
