"""The protocol codec on multi-MiB documents: ``iii.protocol.codec.loads``/``dumps`` against ``json`` and ``orjson``.

Each shape is a realistic big frame: an invocation payload of mixed JSON (dicts of short strings and numbers), one
long string (plain, and with escapes and non-ASCII text), a batch of OTLP spans (nanosecond timestamps as 19-digit
strings), a batch of OTLP log records (bodies of 60 to 1,000 bytes), the mixed frame with a null in its envelope,
rows with nulls in every row (orjson writes NaN as null: the codec must tell a None from a NaN), arrays of floats, of
60-bit integers and of 100-bit integers, and 100-level nesting repeated. Every shape is parsed (and its value
written) by all three in the same round; rounds are interleaved and each figure is the median of its rounds, so the
ratios hold on a busy machine where the absolute times wander. The documents are all big, one after another: the
codec's dumps then writes each wrapped at once, proving its depth in the one encode (a big one after small ones
pays one more encode for that, as every big one did before).

``best`` is the faster of the parsers that are exact on that document (orjson turns integers beyond 64 bits into
floats, so only json counts for the 100-bit shape); ``ours/best`` is the figure the codec is held to (goal: about
1.5 or less). ``peak`` is tracemalloc's peak during one call, as a multiple of the document's length (orjson's
reader allocates about 12 times the document up front; the codec gives mostly-text documents to json for that).
Documents are bytes (telemetry frames, binary frames); ``--str`` parses them as str (text frames) as well.

Usage: .venv/bin/python bench/codec_large.py [--mib 4] [--rounds 5] [--str] [--only SHAPE[,SHAPE...]]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain script: use the checkout

from iii.protocol import codec

_ID = "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"


def _frame(data: Any) -> bytes:
    frame = {"type": "invokefunction", "invocation_id": _ID, "function_id": "orders::import", "data": data}
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()


def mixed(size: int) -> bytes:
    rnd = random.Random(1)
    items = [{"id": i, "name": f"user-{rnd.randrange(10**6)}", "score": rnd.random() * 100,
              "active": rnd.random() < 0.5, "tags": ["a", "bb", "ccc"], "city": rnd.choice(["Paris", "Tokyo"]),
              "n": rnd.randrange(10**9)} for i in range(size // 120)]
    return _frame({"items": items})


def long_string(size: int) -> bytes:
    return _frame("x" * size)


def text_escaped(size: int) -> bytes:
    return _frame('héllo "wörld"\n\t日本 ' * (size // 24))


def spans(size: int) -> bytes:
    rnd = random.Random(2)
    batch = [{"traceId": f"{rnd.getrandbits(128):032x}", "spanId": f"{rnd.getrandbits(64):016x}",
              "name": "call orders::import", "kind": 2, "startTimeUnixNano": str(1_700_000_000_000_000_000 + i),
              "endTimeUnixNano": str(1_700_000_000_000_100_000 + i),
              "attributes": [{"key": "function_id", "value": {"stringValue": "orders::import"}}],
              "events": [], "links": [], "status": {"code": 1, "message": ""},
              "parentSpanId": f"{rnd.getrandbits(64):016x}"} for i in range(size // 400)]
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "iii"},
                                                                               "spans": batch}]}]}
    return json.dumps(body, separators=(",", ":")).encode()


def otlp_logs(size: int) -> bytes:
    rnd = random.Random(6)
    records = [{"timeUnixNano": str(1_700_000_000_000_000_000 + i), "severityNumber": 9, "severityText": "INFO",
                "body": {"stringValue": f"request {i}: " + "lorem ipsum dolor sit amet " * rnd.randrange(2, 40)},
                "attributes": [{"key": "worker", "value": {"stringValue": "w-1"}}],
                "traceId": f"{rnd.getrandbits(128):032x}", "spanId": f"{rnd.getrandbits(64):016x}"}
               for i in range(size // 800)]
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}, separators=(",", ":")).encode()


def envelope_null(size: int) -> bytes:
    """The mixed frame with one null in its envelope: orjson writes NaN as null too, so any null asks for a look."""
    frame = json.loads(mixed(size))
    frame["traceparent"] = None
    return json.dumps(frame, separators=(",", ":")).encode()


def rows_nulls(size: int) -> bytes:
    rnd = random.Random(7)
    rows = [{"id": i, "email": None if rnd.random() < 0.5 else f"u{i}@example.com", "score": rnd.random() * 100,
             "tags": ["a", "bb"], "deleted_at": None, "parent": None if i % 3 else i - 1} for i in range(size // 110)]
    return _frame({"rows": rows})


def floats(size: int) -> bytes:
    rnd = random.Random(5)
    return _frame([rnd.random() for _ in range(size // 20)])


def ints64(size: int) -> bytes:
    rnd = random.Random(4)
    return _frame([rnd.getrandbits(60) for _ in range(size // 20)])


def bigints(size: int) -> bytes:
    rnd = random.Random(3)
    return _frame([rnd.getrandbits(100) for _ in range(size // 32)])


def deep(size: int) -> bytes:
    unit = "[" * 100 + "1" + "]" * 100
    return _frame(json.loads("[" + ",".join([unit] * (size // (len(unit) + 1))) + "]"))


SHAPES: dict[str, Callable[[int], bytes]] = {
    "mixed": mixed, "long_string": long_string, "text_escaped": text_escaped, "spans": spans, "otlp_logs": otlp_logs,
    "envelope_null": envelope_null, "rows_nulls": rows_nulls, "floats": floats,
    "ints64": ints64, "bigints_100bit": bigints, "deep_100": deep,
}


def _timed(fn: Callable[[Any], Any], arg: Any) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def _peak(fn: Callable[[Any], Any], arg: Any) -> float:
    """tracemalloc's peak during ``fn(arg)`` above what was held before, in bytes."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn(arg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def _orjson_exact(raw: bytes | str, expected: Any) -> bool:
    """Whether orjson gives the exact value (same types too: 2**70 must not come back as a float)."""
    try:
        return orjson.dumps(orjson.loads(raw)) == orjson.dumps(expected)
    except (orjson.JSONDecodeError, TypeError):  # TypeError: the expected value holds an int orjson cannot write
        return False


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=4.0, help="size of each document (default 4)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--str", action="store_true", help="also parse every document given as str")
    parser.add_argument("--only", default="", help="comma-separated shape names")
    args = parser.parse_args()
    size = int(args.mib * 1024 * 1024)
    names = [n for n in SHAPES if not args.only or n in args.only.split(",")]
    docs: dict[str, bytes | str] = {}
    for name in names:
        made = SHAPES[name](size)
        docs[name] = made
        if args.str:
            docs[f"{name} (str)"] = made.decode()
    values = {name: json.loads(raw) for name, raw in docs.items()}
    for name, raw in docs.items():  # the codec must give the exact value before its speed means anything
        back = json.loads(codec.dumps(values[name]))  # orjson writes 1e-06 as 1e-6: compare values, not text
        if codec.loads(raw) != values[name] or back != values[name]:
            sys.exit(f"codec_large: codec.loads/dumps differ from json on {name}")
    exact = {name: _orjson_exact(raw, values[name]) for name, raw in docs.items()}
    # The documents and their values stay alive all run: out of the collector's reach, so that a parse is not
    # charged for walks over the other shapes' millions of objects (which held deep_100 up 4x).
    gc.collect()
    gc.freeze()

    loaders: dict[str, Callable[[Any], Any]] = {"ours": codec.loads, "json": json.loads, "orjson": orjson.loads}
    dumpers: dict[str, Callable[[Any], Any]] = {"ours": codec.dumps, "json": _json_dumps, "orjson": orjson.dumps}
    load_t: dict[tuple[str, str], list[float]] = {}
    dump_t: dict[tuple[str, str], list[float]] = {}
    for round_no in range(args.rounds):
        order = list(loaders) if round_no % 2 == 0 else list(reversed(loaders))
        for name, raw in docs.items():
            for who in order:
                load_t.setdefault((name, who), []).append(_timed(loaders[who], raw))
                if who != "orjson" or exact[name]:
                    dump_t.setdefault((name, who), []).append(_timed(dumpers[who], values[name]))
            gc.collect()

    def med(table: dict[tuple[str, str], list[float]], name: str, who: str) -> float:
        return statistics.median(table[(name, who)]) if (name, who) in table else float("nan")

    print(f"codec_large: {args.mib:g} MiB documents, medians of {args.rounds} interleaved rounds "
          "(ms; ratios are ours / other; best = the faster exact parser)")
    print(f"{'loads':22s} {'MB':>5s} {'ours':>8s} {'json':>8s} {'orjson':>8s} {'/json':>6s} {'/orjson':>7s} "
          f"{'/best':>6s}   peak x doc: ours json orjson")
    worst = 0.0
    for name, raw in docs.items():
        ours, js, oj = (med(load_t, name, who) for who in loaders)
        best = min(js, oj) if exact[name] else js
        worst = max(worst, ours / best)
        peaks = [_peak(loaders[who], raw) / len(raw) for who in loaders]
        orjson_note = "" if exact[name] else " (orjson inexact)"
        print(f"{name:22s} {len(raw) / 1e6:5.1f} {ours * 1e3:8.1f} {js * 1e3:8.1f} {oj * 1e3:8.1f} {ours / js:6.2f} "
              f"{ours / oj:7.2f} {ours / best:6.2f}   {peaks[0]:6.1f} {peaks[1]:5.1f} {peaks[2]:5.1f}{orjson_note}")
    print(f"loads: worst ours/best {worst:.2f}")
    print(f"{'dumps':22s} {'':5s} {'ours':>8s} {'json':>8s} {'orjson':>8s} {'/json':>6s} {'/orjson':>7s}")
    for name in docs:
        ours, js, oj = (med(dump_t, name, who) for who in dumpers)
        print(f"{name:22s} {'':5s} {ours * 1e3:8.1f} {js * 1e3:8.1f} {oj * 1e3:8.1f} {ours / js:6.2f} {ours / oj:7.2f}")


if __name__ == "__main__":
    main()
