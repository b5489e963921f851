"""Converting OTLP spans for the span store: the usual span (the one every handled call sends) in one straight step,
the same stored span, errors and item-budget counts as field by field, and few Python-level calls per span."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import pytest

from iii_engine.modules.observability import otlp
from iii_engine.modules.observability.otlp import TelemetryFormatError, item_budget, spans_from_otlp

T = TypeVar("T")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
USUAL: dict[str, Any] = {
    "traceId": TRACE, "spanId": "00f067aa0ba902b7", "name": "call f", "kind": 2,
    "startTimeUnixNano": "1796170817880771273", "endTimeUnixNano": "1796170817880772273",
    "attributes": [], "events": [], "links": [], "status": {"code": 1, "message": ""},
}

# The usual span, then one change each: every one must come out as the field-by-field conversion makes it.
VARIANTS: list[dict[str, Any]] = [
    {},
    {"parentSpanId": "a" * 16},
    {"parentSpanId": "0" * 16},
    {"status": {"code": 2, "message": "boom"}},
    {"status": None},
    {"status": {"code": [1]}},  # unhashable: the same TypeError either way
    {"flags": 769},
    {"startTimeUnixNano": 5, "endTimeUnixNano": 7},
    {"startTimeUnixNano": None, "endTimeUnixNano": None},
    {"startTimeUnixNano": "18446744073709551615"},  # 2**64 - 1: 20 digits, the largest kept
    {"startTimeUnixNano": "18446744073709551616"},  # 2**64: out of range
    {"startTimeUnixNano": "99999999999999999999"},
    {"startTimeUnixNano": "007"},
    {"startTimeUnixNano": " 5 "},
    {"startTimeUnixNano": "-5"},
    {"startTimeUnixNano": "\u0665"},  # an Arabic-Indic digit: isdigit() says yes, the decimal pattern no
    {"startTimeUnixNano": "\u00b2"},  # a superscript two: the same
    {"startTimeUnixNano": ""},
    {"startTimeUnixNano": "1" * 21},
    {"endTimeUnixNano": True},
    {"endTimeUnixNano": 5.0},
    {"endTimeUnixNano": -1},
    {"endTimeUnixNano": 2**64},
    {"traceId": None},
    {"spanId": 5},
    {"name": ["x"]},
    {"attributes": None, "events": None, "links": None},
    {"attributes": {}},
    {"attributes": 0},
    {"attributes": [{"key": "k", "value": {"stringValue": "v"}}]},
    {"events": [{"name": "e", "timeUnixNano": "3"}]},
    {"events": {}},
    {"events": ""},
    {"events": ()},
    {"links": [{"traceId": TRACE, "spanId": "b" * 16}]},
    {"links": 0},
]


def _frame(span: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "iii-python-sdk", "version": "1"}, "spans": [span]}]}]}


def _convert(frame: dict[str, Any], budget: int) -> tuple[object, list[int]]:
    """``(stored spans or the error's type and message, the item budget's [left, cut])``."""
    with item_budget(budget) as counts:
        try:
            result: object = spans_from_otlp(frame)
        except Exception as exc:  # the error itself is compared
            result = (type(exc), str(exc))
    return result, counts


@pytest.mark.parametrize("change", VARIANTS, ids=[repr(v)[:60] for v in VARIANTS])
@pytest.mark.parametrize("budget", [100, 2])
def test_the_straight_step_converts_as_field_by_field(monkeypatch: pytest.MonkeyPatch, change: dict[str, Any],
                                                      budget: int) -> None:
    frame = _frame({**USUAL, **change})
    straight = _convert(frame, budget)
    monkeypatch.setattr(otlp, "_plain_span", lambda *args: None)  # every span field by field
    assert straight == _convert(frame, budget)


def test_the_usual_span_is_stored_whole() -> None:
    (stored,) = spans_from_otlp(_frame({**USUAL, "parentSpanId": "a" * 16}))
    assert stored == {
        "trace_id": TRACE, "span_id": "00f067aa0ba902b7", "parent_span_id": "a" * 16, "name": "call f",
        "start_time_unix_nano": 1796170817880771273, "end_time_unix_nano": 1796170817880772273, "status": "ok",
        "attributes": [], "service_name": "svc", "events": [], "links": [],
        "instrumentation_scope_name": "iii-python-sdk", "instrumentation_scope_version": "1"}


def test_a_bad_span_is_still_refused() -> None:
    with pytest.raises(TelemetryFormatError, match="out of range"):
        spans_from_otlp(_frame({**USUAL, "endTimeUnixNano": "18446744073709551616"}))
    with pytest.raises(TelemetryFormatError, match="events must be an array"):
        spans_from_otlp(_frame({**USUAL, "events": {}}))


def test_flags_and_link_ids_are_what_otlp_says_or_refused() -> None:
    # before: any JSON value was stored as sent and the memory bound counted a few bytes for it (150,000 nested
    # lists as a span's flags: 100 MB held, 39 KB counted)
    with pytest.raises(TelemetryFormatError, match="flags must be an integer"):
        spans_from_otlp(_frame({**USUAL, "flags": [[0]] * 1000}))
    with pytest.raises(TelemetryFormatError, match="flags 4294967296 is out of range"):
        spans_from_otlp(_frame({**USUAL, "flags": 2**32}))
    link = {"traceId": None, "spanId": "00f067aa0ba902b7", "traceState": ["x"] * 1000}
    (stored,) = spans_from_otlp(_frame({**USUAL, "flags": 257, "links": [link]}))
    assert stored["flags"] == 257
    assert stored["links"] == [{"trace_id": None, "span_id": "00f067aa0ba902b7", "trace_state": None,
                                "attributes": []}]
    # a link id that is not an OTLP id is refused, as a span's own (before: a JSON object as traceId became None)
    with pytest.raises(TelemetryFormatError, match="a span link without a string 'traceId'"):
        spans_from_otlp(_frame({**USUAL, "links": [{**link, "traceId": {"big": [1] * 1000}}]}))


def python_calls(run: Callable[[], T]) -> tuple[list[str], T]:
    """``(the names of the Python-level functions run() calls, what it returns)``; a garbage collection meanwhile
    (whose finalizers would count) is held off."""
    called: list[str] = []

    def count(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    collecting = gc.isenabled()
    gc.disable()
    sys.setprofile(count)
    try:
        result = run()
    finally:
        sys.setprofile(None)
        if collecting:
            gc.enable()
    return called[1:], result  # not the lambda itself


def test_the_usual_spans_take_few_python_calls_each() -> None:
    # Before: 21 Python-level calls per usual span (each field through its own helper), the engine's largest cost
    # per handled call with the default module set; now two (the straight step and the scope's).
    spans = [{**USUAL, "spanId": f"{i:016x}", "parentSpanId": "a" * 16 if i % 2 else ""} for i in range(100)]
    frame = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    called, stored = python_calls(lambda: spans_from_otlp(frame))
    assert len(stored) == 100
    assert len(called) <= 2 * len(stored) + 20, sorted(set(called))
