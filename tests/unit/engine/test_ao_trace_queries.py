"""engine::traces::list attribute filters: repeated ones cost one check, too many distinct ones are refused."""

from __future__ import annotations

import time
from typing import Any

import pytest

from iii_engine.modules.base import EngineError
from iii_engine.modules.observability.queries import MAX_ATTRIBUTE_FILTERS, list_traces


def _spans(count: int) -> list[dict[str, Any]]:
    return [{"trace_id": f"t{i}", "span_id": "s", "parent_span_id": None, "name": "n", "start_time_unix_nano": 0,
             "end_time_unix_nano": 1, "service_name": "x", "status": "ok",
             "attributes": [["k", "first"], ["k", "second"], *([f"a{j}", "v"] for j in range(50))]}
            for i in range(count)]


def test_repeated_filters_are_checked_once() -> None:
    # Before: 20,000 copies of one pair were each checked against each of 1000 spans, 4 s on the event loop.
    spans = _spans(1000)
    started = time.perf_counter()
    listed = list_traces(spans, {"attributes": [["a49", "v"]] * 20_000, "limit": 1})
    assert time.perf_counter() - started < 1.0
    assert listed["total"] == 1000


def test_too_many_distinct_filters_are_refused_by_name() -> None:
    too_many = [[f"a{j}", "v"] for j in range(MAX_ATTRIBUTE_FILTERS + 1)]
    with pytest.raises(EngineError, match=f"attributes has {MAX_ATTRIBUTE_FILTERS + 1} distinct filters"):
        list_traces(_spans(1), {"attributes": too_many})


def test_the_first_value_of_a_repeated_attribute_is_the_one_matched() -> None:
    assert list_traces(_spans(2), {"attributes": [["k", "first"]]})["total"] == 2
    assert list_traces(_spans(2), {"attributes": [["k", "second"]]})["total"] == 0
