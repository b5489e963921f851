"""``serialize_spans`` writes its text directly (issue 10) and must write exactly what ``dumps`` wrote for the dict
documents it used to build: same bytes for every kind of span, same failures for values JSON cannot carry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from iii import OtelConfig, telemetry
from iii.telemetry_exporters import _scope_json, _span_json, serialize_spans
from iii.wire import dumps

A = Resource.create({"service.name": "a", "n": 3})
B = Resource.create({"service.name": 'b\u00e9"\\', "list": ["x", "y"]})


def _dict_document(spans: Sequence[Any]) -> bytes:
    """The document as serialize_spans built it before issue 10: dicts, then one dumps."""
    resources: dict[int, Any] = {}
    scopes: dict[int, dict[tuple[str, str], tuple[Any, list[Any]]]] = {}
    for span in spans:
        resources.setdefault(id(span.resource), span.resource)
        scope = span.instrumentation_scope
        key = ((scope.name if scope else "") or "", (scope.version if scope else "") or "")
        scopes.setdefault(id(span.resource), {}).setdefault(key, (scope, []))[1].append(span)
    return dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": k, "value": _value(v)} for k, v in resource.attributes.items()]
                    },
                    "scopeSpans": [
                        {"scope": _scope_json(scope), "spans": [_span_json(span) for span in members]}
                        for scope, members in scopes[rid].values()
                    ],
                }
                for rid, resource in resources.items()
            ]
        }
    ).encode()


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": value}
    return {"arrayValue": {"values": [_value(item) for item in value]}}


def _sdk_spans() -> list[ReadableSpan]:
    spans: list[ReadableSpan] = []
    for resource in (A, B):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope, version in (("s1", None), ("s2", "1.0"), ("s1", None)):
            tracer = provider.get_tracer(scope, version)
            with tracer.start_as_current_span('root "quoted" \\ \u2603 \n\t\x01') as root:
                root.set_status(Status(StatusCode.ERROR, 'bad "thing" \u00e9\n'))
                link = Link(root.get_span_context(), {"why": "test", "n": 2**70})
                with tracer.start_as_current_span(
                    "child",
                    kind=SpanKind.CLIENT,
                    links=[link],
                    attributes={"b": True, "i": -7, "f": 1.5, "s": "x\u0000y", "l": ["a", "b"], "big": 2**65},
                ) as child:
                    child.add_event("step", {"n": 1, "t": (1.0, 2.5)}, timestamp=12)
                    child.add_event("bare")
                    child.set_status(StatusCode.OK)
                with tracer.start_as_current_span("null", kind=SpanKind.INTERNAL):
                    pass
        provider.shutdown()
        spans += exporter.get_finished_spans()
    return spans


def test_sdk_spans_of_every_shape_give_the_same_bytes() -> None:
    spans = _sdk_spans()
    assert serialize_spans(spans) == _dict_document(spans)
    for span in spans:
        assert serialize_spans([span]) == _dict_document([span])
    assert serialize_spans([]) == b'{"resourceSpans":[]}' == _dict_document([])


def test_handler_spans_give_the_same_bytes() -> None:
    telemetry.shutdown_otel()
    frames: list[bytes] = []
    telemetry.init_otel(
        OtelConfig(
            enabled=True,
            service_name="speed",
            service_instance_id="i1",
            fetch_instrumentation_enabled=False,
            metrics_enabled=False,
            logs_enabled=False,
        ),
        frame_sink=frames.append,
    )
    try:
        tracer = telemetry.get_tracer()
        parent = telemetry.extract_context(f"00-{2**127 + 5:032x}-{2**63 + 9:016x}-01", None)
        spans = [
            telemetry.start_handler_span(tracer, name, context)
            for name in ("call a", "call a", 'call \u00e9"')
            for context in (parent, None)
        ]
        spans[0].set_status(Status(StatusCode.OK))
        spans[1].set_status(StatusCode.ERROR, "why\n")
        spans[2].set_attribute("k", "v")
        for span in spans:
            span.end_time = time.time_ns()  # ended without the processor: serialised here only
        assert type(spans[0]).__name__ == "LightSpan"
        assert serialize_spans(spans) == _dict_document(spans)
    finally:
        telemetry.shutdown_otel()


class _Span:
    """A ReadableSpan look-alike with ids the SDK never makes (out of the 128/64-bit range)."""

    def __init__(self, trace_id: int, span_id: int, parent_id: int | None) -> None:
        self.context = SpanContext(trace_id, span_id, False, TraceFlags(1))
        self.parent = None if parent_id is None else SpanContext(trace_id, parent_id, False)
        self.name = "odd"
        self.kind = SpanKind.PRODUCER
        self.status = Status(StatusCode.UNSET)
        self.attributes: dict[str, Any] = {}
        self.events: tuple[Any, ...] = ()
        self.links: tuple[Any, ...] = ()
        self.start_time: int | None = None
        self.end_time: int | None = 5
        self.resource = A
        self.instrumentation_scope = InstrumentationScope("odd")


@pytest.mark.parametrize("ids", [(2**130, 1, None), (1, 2**70, 3), (1, 2, 2**64), (0, 0, 0)])
def test_ids_out_of_range_are_written_as_format_writes_them(ids: tuple[int, int, int | None]) -> None:
    span = _Span(*ids)
    assert serialize_spans([span]) == _dict_document([span])


def test_a_value_json_cannot_carry_fails_as_before() -> None:
    span = _Span(1, 2, None)
    span.attributes = {"x": float("nan")}
    with pytest.raises(ValueError, match="NaN"):
        _dict_document([span])
    with pytest.raises(ValueError, match="NaN"):
        serialize_spans([span])


def test_the_name_cache_is_bounded() -> None:
    from iii import telemetry_exporters

    for n in range(telemetry_exporters._NAMES_MAX + 10):
        span = _Span(1, 2, None)
        span.name = f"call f{n}"
        assert serialize_spans([span]) == _dict_document([span])
    assert len(telemetry_exporters._NAMES) <= telemetry_exporters._NAMES_MAX
