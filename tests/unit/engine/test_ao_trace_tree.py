"""engine::traces::tree's builder against spans a hostile worker links to themselves."""

from __future__ import annotations

import threading
from typing import Any

from iii_engine.modules.observability.queries import TREE_MAX_DEPTH, trace_tree


def _count(node: dict[str, Any]) -> int:
    return 1 + sum(_count(child) for child in node["children"])


def test_spans_sharing_one_id_make_a_tree_no_larger_than_the_trace() -> None:
    # Before: every span whose parent id was the shared id was a child of every other one, so three of them made
    # 2**256 nodes and the call (on the engine's event loop) never ended. Run in a thread so the old code fails
    # the join instead of hanging the test run.
    shared = "ab" * 8
    spans = [{"trace_id": "t", "span_id": shared, "parent_span_id": None, "name": "root"}]
    spans += [{"trace_id": "t", "span_id": shared, "parent_span_id": shared, "name": f"s{i}"} for i in range(30)]
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(trace_tree(spans)), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "trace_tree did not finish within 5 s"
    [root] = result["roots"]
    assert _count(root) == len(spans)
    assert sorted(n["name"] for n in _walk(root)) == sorted(s["name"] for s in spans)


def test_a_normal_tree_is_unchanged() -> None:
    spans = [{"trace_id": "t", "span_id": "r", "parent_span_id": None, "name": "root"},
             {"trace_id": "t", "span_id": "a", "parent_span_id": "r", "name": "a"},
             {"trace_id": "t", "span_id": "b", "parent_span_id": "r", "name": "b"},
             {"trace_id": "t", "span_id": "c", "parent_span_id": "a", "name": "c"}]
    [root] = trace_tree(spans)["roots"]
    assert [(k["name"], [g["name"] for g in k["children"]]) for k in root["children"]] == [("a", ["c"]), ("b", [])]


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(span for child in node["children"] for span in _walk(child))]


def test_a_chain_is_cut_below_the_depth_bound_and_says_so() -> None:
    chain = [{"span_id": str(i), "parent_span_id": str(i - 1) if i else None} for i in range(TREE_MAX_DEPTH + 2)]
    assert trace_tree(chain[:TREE_MAX_DEPTH + 1])["depth_cut"] is False  # exactly the bound: whole
    tree = trace_tree(chain)
    assert tree["depth_cut"] is True and len(_walk(tree["roots"][0])) == TREE_MAX_DEPTH + 1
