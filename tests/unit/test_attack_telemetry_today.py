"""Attack on today's telemetry speed work (ac62a7e, cdc4da7, 7bc2e6b): inputs where the hand-written span text or
the cached handler-span flags differed from what the code before them made, and caches without a bound."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from iii import OtelConfig, telemetry, telemetry_exporters
from iii.telemetry_exporters import _key_values, _scope_json, _span_json, serialize_spans
from iii.wire import dumps

RESOURCE = Resource({"service.name": "attack"})
SCOPE = InstrumentationScope("attack")


class _Span:
    """A ReadableSpan look-alike; every field can be set to what the SDK does not check."""

    def __init__(self, **fields: Any) -> None:
        self.context: Any = SpanContext(1, 2, False, TraceFlags(1))
        self.parent: Any = None
        self.name: Any = "n"
        self.kind: Any = SpanKind.SERVER
        self.status: Any = Status(StatusCode.UNSET)
        self.attributes: Any = {}
        self.events: Any = ()
        self.links: Any = ()
        self.start_time: Any = 1
        self.end_time: Any = 2
        self.resource = RESOURCE
        self.instrumentation_scope = SCOPE
        self.__dict__.update(fields)


def _dict_document(span: _Span) -> bytes:
    """One span's batch as serialize_spans wrote it before ac62a7e: dicts, then one dumps."""
    return dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": _key_values(RESOURCE.attributes)},
                    "scopeSpans": [{"scope": _scope_json(SCOPE), "spans": [_span_json(span)]}],
                }
            ]
        }
    ).encode()


def _same_as_before(span: _Span) -> None:
    assert serialize_spans([span]) == _dict_document(span)


@pytest.mark.parametrize(("first", "then"), [(1, True), (True, 1), (1, 1.0), (0, False), (1.0, True)])
def test_equal_names_of_other_types_are_not_confused_by_the_name_cache(first: Any, then: Any) -> None:
    # Before: the cache keyed by value gave True the text of 1 ('"name":1' instead of '"name":true').
    _same_as_before(_Span(name=first))
    _same_as_before(_Span(name=then))


def test_an_unhashable_name_is_written_as_before() -> None:
    _same_as_before(_Span(name=["a", 1]))  # before: TypeError from the name cache, the batch lost


def test_long_names_are_not_kept_by_the_name_cache() -> None:
    # Before: 4096 names of any length stayed cached (4096 names of 1 MB: 8 GB kept after the spans are gone).
    names = [f"{n}:" + "x" * 100_000 for n in range(5)]
    for name in names:
        _same_as_before(_Span(name=name))
    assert not any(name in telemetry_exporters._NAMES for name in names)
    _same_as_before(_Span(name="short"))
    assert "short" in telemetry_exporters._NAMES


class _StrInt(int):
    def __str__(self) -> str:
        return "str"

    def __format__(self, spec: str) -> str:
        return "format"


@pytest.mark.parametrize("value", ['1"2', "\\", _StrInt(7), 1.5, 2**70])
def test_times_that_are_not_plain_ints_are_written_as_before(value: Any) -> None:
    # Before: a str time went out unescaped (invalid JSON), an int subclass through __format__ instead of __str__.
    _same_as_before(_Span(start_time=value))
    _same_as_before(_Span(end_time=value))


def test_ids_of_an_int_subclass_are_written_as_before() -> None:
    odd = tuple.__new__(SpanContext, (_StrInt(3), _StrInt(4), False, TraceFlags(0), None, True))
    _same_as_before(_Span(context=odd))
    _same_as_before(_Span(parent=odd))


class _Ids:
    trace_id = 5
    span_id = 6


def test_a_context_that_is_not_a_tuple_is_written_as_before() -> None:
    _same_as_before(_Span(context=_Ids()))  # before: TypeError (not subscriptable), the batch lost


class _Kind:
    """Not an Enum: a fresh object with a value per span."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_the_enum_value_cache_holds_enum_members_only() -> None:
    before = len(telemetry_exporters._ENUM_VALUES)
    for n in range(100):
        _same_as_before(_Span(kind=_Kind(n % 5)))
    assert len(telemetry_exporters._ENUM_VALUES) <= before + 1  # before: one entry (and object) kept per span


class _Code(enum.Enum):
    ONE = 1


def test_enum_members_still_cached() -> None:
    _same_as_before(_Span(kind=_Code.ONE))
    assert telemetry_exporters._ENUM_VALUES[id(_Code.ONE)] == (_Code.ONE, 1)


@pytest.fixture
def handler_spans() -> Any:
    telemetry.shutdown_otel()
    telemetry.init_otel(
        OtelConfig(enabled=True, fetch_instrumentation_enabled=False, metrics_enabled=False, logs_enabled=False),
        frame_sink=lambda frame: None,
    )
    spans = telemetry.runtime().handler_spans
    assert spans is not None and spans.usable()
    yield spans
    telemetry.shutdown_otel()


def test_the_child_flags_cache_is_bounded(handler_spans: Any) -> None:
    # A propagator other than ours may hand any TraceFlags (an int) to the light spans; before, each value stayed
    # in the cache.
    for flags in range(256, 1256):
        parent = SpanContext(7, 8, True, TraceFlags(flags))
        span = handler_spans.start_child("call f", parent, None)
        assert span.get_span_context().trace_flags == (flags & 1) | (flags & 2)
    assert len(handler_spans._child_flags) <= 256


def test_flags_that_are_not_trace_flags_fail_as_the_sdk_fails_whatever_was_cached(handler_spans: Any) -> None:
    # The SDK's ParentBased sampler reads trace_flags.sampled: a plain int fails. Before, it failed only until the
    # TraceFlags of the same value had been cached, and then was taken.
    handler_spans.start_child("call f", SpanContext(7, 8, True, TraceFlags(1)), None)
    plain = tuple.__new__(SpanContext, (7, 8, True, 1, None, True))
    with pytest.raises(AttributeError, match="sampled"):
        handler_spans.start_child("call f", plain, None)
