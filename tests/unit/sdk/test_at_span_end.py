"""Attack A-T: a handler span (LightSpan) is written as text when it ends, so what it holds then is what is exported,
and it is handed to the batch exactly once however its ends interleave."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry import trace

from iii import light_span, telemetry
from iii.trace_scope import TraceScope


def _exported(frames: list[bytes]) -> list[dict[str, Any]]:
    return [span for frame in frames if frame.startswith(b"OTLP")
            for rs in json.loads(frame[4:])["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


async def test_an_ended_spans_attributes_refuse_changes_as_the_sdks_do(frames: list[bytes]) -> None:
    ended: list[Any] = []

    async def handler() -> None:
        span = trace.get_current_span()
        span.set_attribute("m", "v")
        ended.append(span)

    await TraceScope(telemetry).run("call f", handler, None, None)
    with pytest.raises(TypeError):  # the SDK's ended span: its attributes are read-only too
        ended[0].attributes["m"] = "changed"
    telemetry.force_flush()
    assert [span["attributes"] for span in _exported(frames)] == [[{"key": "m", "value": {"stringValue": "v"}}]]


async def test_a_span_ended_again_while_it_ends_is_exported_once(frames: list[bytes],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spans: list[Any] = []
    clock = light_span._time_ns

    def switching_clock() -> int:
        # Another thread's end() runs here, as a thread switch after the clock call would let it.
        if spans:
            spans.pop().end()
        return clock()

    async def handler() -> None:
        spans.append(trace.get_current_span())
        monkeypatch.setattr(light_span, "_time_ns", switching_clock)

    await TraceScope(telemetry).run("call f", handler, None, None)
    monkeypatch.setattr(light_span, "_time_ns", clock)
    telemetry.force_flush()
    assert [span["name"] for span in _exported(frames)] == ["call f"]
