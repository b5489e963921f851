"""``extract_context``'s direct parse of the W3C headers gives exactly what the default propagators extract."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, trace
from opentelemetry.propagate import extract

from iii import telemetry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADERS = [
    (f"00-{TRACE}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE}-00f067aa0ba902b7-00", "k=v,other=x%20y"),
    (None, "k=v"),
    (None, None),
    ("", ""),
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),  # upper case: invalid
    (f"01-{TRACE}-00f067aa0ba902b7-01-extra", None),  # a later version with more fields: valid
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 with more fields: invalid
    (f"ff-{TRACE}-00f067aa0ba902b7-01", None),  # version ff: invalid
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", "k=v"),  # zero trace id
    (f"00-{TRACE}-{'0' * 16}-01", None),  # zero span id
    (f" 00-{TRACE}-00f067aa0ba902b7-01 ", None),  # padded
    ("garbage", "k=v"),
]


def _view(ctx: object) -> tuple[object, ...]:
    span_context = trace.get_current_span(ctx).get_span_context()  # type: ignore[arg-type]
    return (span_context.trace_id, span_context.span_id, span_context.trace_flags, span_context.is_remote,
            span_context.trace_state, type(trace.get_current_span(ctx)), dict(baggage.get_all(ctx)))  # type: ignore[arg-type]


@pytest.mark.parametrize(("traceparent", "bag"), HEADERS)
def test_same_context_as_the_propagators(traceparent: str | None, bag: str | None) -> None:
    carrier = {key: value for key, value in (("traceparent", traceparent), ("baggage", bag)) if value}
    assert _view(telemetry.extract_context(traceparent, bag)) == _view(extract(carrier))
