"""A frame's spans go into the span store in one step: the same entries kept and evicted as one by one, and no
Python-level call per span for it."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from iii_engine.modules.observability.module import OtelModule
from iii_engine.modules.observability.stores import SpanStore
from tests.unit.engine.test_otlp_plain_spans import python_calls


@pytest.mark.parametrize("seed", range(40))
def test_adding_all_at_once_keeps_what_adding_one_by_one_keeps(seed: int) -> None:
    rng = random.Random(seed)
    capacity, max_bytes = rng.randint(1, 12), rng.randint(1, 400)
    one_by_one, at_once = SpanStore(capacity, max_bytes), SpanStore(capacity, max_bytes)
    for frame in range(rng.randint(1, 6)):
        size = rng.choice([0, 1, 7, 50, 500])  # 500: one entry over max_bytes alone (kept while newest)
        entries = [{"frame": frame, "n": n} for n in range(rng.randint(1, 15))]
        for entry in entries:
            one_by_one.add(entry, size)
        at_once.add_all(entries, size)
        assert (at_once.entries(), at_once.bytes, at_once.evicted) == \
            (one_by_one.entries(), one_by_one.bytes, one_by_one.evicted)


def _frame(count: int) -> dict[str, Any]:
    spans = [{"traceId": "ab" * 16, "spanId": f"{i:016x}", "name": "call f", "kind": 2,
              "startTimeUnixNano": "1796170817880771273", "endTimeUnixNano": "1796170817880772273",
              "attributes": [], "events": [], "links": [], "status": {"code": 1, "message": ""}}
             for i in range(count)]
    return {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "s"}, "spans": spans}]}]}


def test_a_frame_of_spans_is_stored_without_a_call_per_span() -> None:
    # Before: SpanStore.add per span, a Python-level call each on top of the conversion's two (3 per span in all).
    module = OtelModule(None, {"enabled": True, "exporter": "memory", "memory_max_spans": 150})  # type: ignore[arg-type]
    frame = _frame(200)
    body = json.dumps(frame).encode()
    called, _ = python_calls(lambda: module._store_frame("OTLP", body, frame))
    assert module.spans is not None
    stored = module.spans.entries()
    assert [span["span_id"] for span in stored] == [f"{i:016x}" for i in range(50, 200)]
    # each charged what it holds; the frame's service and scope to the first span, evicted
    charged = SpanStore(1)
    charged.sizes(stored[:1])
    assert module.spans.evicted == 50 and module.spans.bytes == sum(charged.sizes(stored))
    assert len(called) <= 2 * 200 + 40, sorted(set(called))
