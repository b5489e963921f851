"""The filters, sorting, paging and aggregation behind ``engine::logs::list``, ``engine::traces::*`` and
``engine::metrics::list``. Pure functions over stored entries; times in inputs are epoch milliseconds, stored
times are nanoseconds.

Example:
    >>> logs = [{"timestamp_unix_nano": 1, "severity_number": 9, "severity_text": "INFO", "trace_id": None,
    ...          "span_id": None}, {"timestamp_unix_nano": 2, "severity_number": 17, "severity_text": "ERROR",
    ...          "trace_id": None, "span_id": None}]
    >>> out = list_logs(logs, {"severity_min": 13})
    >>> [e["severity_text"] for e in out["logs"]], out["total"]
    (['ERROR'], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base import EngineError

__all__ = ["MAX_ATTRIBUTE_FILTERS", "aggregate", "list_logs", "list_traces", "percentile", "trace_tree"]

_MS = 1_000_000
MAX_ATTRIBUTE_FILTERS = 64


def _field(data: dict[str, Any], key: str, kinds: tuple[type, ...], function_id: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: {key} must be {names}")
    return value


def _paging(data: dict[str, Any], function_id: str, default_limit: int | None) -> tuple[int, int | None]:
    offset = _field(data, "offset", (int,), function_id)
    limit = _field(data, "limit", (int,), function_id)
    if (offset is not None and offset < 0) or (limit is not None and limit < 0):
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {function_id}: offset and limit must be >= 0")
    return offset or 0, default_limit if limit is None else limit


def list_logs(entries: Sequence[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Filter (ids, severity, time), newest first, then page."""
    fid = "engine::logs::list"
    trace_id = _field(data, "trace_id", (str,), fid)
    span_id = _field(data, "span_id", (str,), fid)
    severity_min = _field(data, "severity_min", (int,), fid)
    severity_text = _field(data, "severity_text", (str,), fid)
    start = _field(data, "start_time", (int, float), fid)
    end = _field(data, "end_time", (int, float), fid)
    offset, limit = _paging(data, fid, None)
    picked = [
        e for e in entries
        if (trace_id is None or e["trace_id"] == trace_id)
        and (span_id is None or e["span_id"] == span_id)
        and (severity_min is None or e["severity_number"] >= severity_min)
        and (severity_text is None or e["severity_text"].lower() == severity_text.lower())
        and (start is None or e["timestamp_unix_nano"] >= start * _MS)
        and (end is None or e["timestamp_unix_nano"] <= end * _MS)
    ]
    picked.reverse()  # entries come oldest first; ties keep arrival order, newest first
    picked.sort(key=lambda e: e["timestamp_unix_nano"], reverse=True)
    page = picked[offset:] if limit is None else picked[offset:offset + limit]
    query = {"trace_id": trace_id, "span_id": span_id, "severity_min": severity_min, "severity_text": severity_text,
             "start_time": start, "end_time": end, "offset": data.get("offset"), "limit": data.get("limit")}
    return {"logs": page, "total": len(picked), "query": query}


def _attr(span: dict[str, Any], key: str) -> str | None:
    for pair in span.get("attributes", ()):
        if pair[0] == key:
            return str(pair[1])
    return None


def _internal(span: dict[str, Any]) -> bool:
    return _attr(span, "iii.function.kind") == "internal" or (_attr(span, "function_id") or "").startswith("engine::")


def _duration_ms(span: dict[str, Any]) -> float:
    return float(span["end_time_unix_nano"] - span["start_time_unix_nano"]) / _MS


def list_traces(spans: Sequence[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Root spans matching every given filter, sorted and paged."""
    fid = "engine::traces::list"
    trace_id = _field(data, "trace_id", (str,), fid)
    include_internal = bool(_field(data, "include_internal", (bool,), fid))
    texts = {key: _field(data, key, (str,), fid) for key in ("service_name", "name", "status")}
    search_all = bool(_field(data, "search_all_spans", (bool,), fid))
    min_ms = _field(data, "min_duration_ms", (int, float), fid)
    max_ms = _field(data, "max_duration_ms", (int, float), fid)
    start = _field(data, "start_time", (int, float), fid)
    end = _field(data, "end_time", (int, float), fid)
    attributes = _field(data, "attributes", (list,), fid) or []
    # Deduplicated and capped: each filter is checked against every stored span, and 20,000 copies of one pair
    # used to hold the engine's event loop for 4 s (a 4 MiB request, over a minute).
    wanted_attrs = {str(p[0]): str(p[1]) for p in attributes if isinstance(p, list | tuple) and len(p) == 2}
    if len(wanted_attrs) > MAX_ATTRIBUTE_FILTERS:
        raise EngineError("deserialization_error",
                          f"Failed to deserialize input for {fid}: attributes has {len(wanted_attrs)} distinct "
                          f"filters, at most {MAX_ATTRIBUTE_FILTERS} allowed")
    offset, limit = _paging(data, fid, 100)
    name = texts["name"]
    traces_with_name: set[str] = set()
    if search_all and name:
        traces_with_name = {s["trace_id"] for s in spans if name.lower() in s["name"].lower()}

    def keep(span: dict[str, Any]) -> bool:
        if span["parent_span_id"] is not None:
            return False
        if trace_id is not None and span["trace_id"] != trace_id:
            return False
        if not include_internal and _internal(span):
            return False
        for key in ("service_name", "status"):
            wanted = texts[key]
            if wanted and wanted.lower() not in str(span.get(key, "")).lower():
                return False
        if name:
            if search_all:
                if span["trace_id"] not in traces_with_name:
                    return False
            elif name.lower() not in span["name"].lower():
                return False
        duration = _duration_ms(span)
        if (min_ms is not None and duration < min_ms) or (max_ms is not None and duration > max_ms):
            return False
        if start is not None and span["end_time_unix_nano"] < start * _MS:
            return False
        if end is not None and span["start_time_unix_nano"] > end * _MS:
            return False
        if not wanted_attrs:
            return True
        held = {str(pair[0]): str(pair[1]) for pair in reversed(span.get("attributes", ()))}  # first one wins
        return all(held.get(key) == value for key, value in wanted_attrs.items())

    roots = [span for span in spans if keep(span)]
    sort_by = data.get("sort_by")
    descending = str(data.get("sort_order") or "asc").lower() != "asc"
    if sort_by == "duration":
        roots.sort(key=_duration_ms, reverse=descending)
    elif sort_by == "name":
        roots.sort(key=lambda s: s["name"], reverse=descending)
    else:
        roots.sort(key=lambda s: s["start_time_unix_nano"], reverse=descending)
    assert limit is not None
    return {"spans": roots[offset:offset + limit], "total": len(roots), "offset": offset, "limit": limit}


def trace_tree(spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"roots": [...]}`` for the spans of one trace; a span whose parent is not stored is left out."""
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["parent_span_id"] is not None:
            children.setdefault(span["parent_span_id"], []).append(span)

    placed: set[int] = set()

    def node(span: dict[str, Any], depth: int) -> dict[str, Any]:
        # A hostile trace may link spans in a cycle or very deep; the depth bound keeps this finite, and placing
        # each stored span once keeps it small: before, three spans sharing their own id as span and parent id
        # made 2**256 nodes, and one engine::traces::tree call held the engine's event loop for good.
        placed.add(id(span))
        kids = children.get(span["span_id"], []) if depth < 256 else []
        return {**span, "children": [node(kid, depth + 1) for kid in kids if id(kid) not in placed]}

    return {"roots": [node(span, 0) for span in spans if span["parent_span_id"] is None]}


def percentile(sorted_values: Sequence[float], pct: int) -> float:
    """``sorted[floor(n * pct / 100)]``, clamped to the last value; 0 for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0], 99), percentile([], 50)
        (3.0, 2.0, 0.0)
    """
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, len(sorted_values) * pct // 100)])


def aggregate(metrics: Sequence[dict[str, Any]], interval_s: float) -> list[dict[str, Any]]:
    """AggregatedMetric entries: number points bucketed by ``floor(ingestion time / interval)``."""
    # Capped at 2**63 ns (292 years, one bucket): 1e300 s used to overflow to infinity and fail the call.
    width = max(1, int(min(interval_s * 1e9, 2.0**63)))
    buckets: dict[tuple[str, int], list[float]] = {}
    for metric in metrics:
        start = metric["timestamp_unix_nano"] // width * width
        values = [p["value"] for p in metric["data_points"] if p.get("value") is not None]  # null: NaN sent
        if values:
            buckets.setdefault((metric["name"], start), []).extend(values)
    out: list[dict[str, Any]] = []
    for (name, start), values in sorted(buckets.items()):
        values.sort()
        entry: dict[str, Any] = {"name": name, "bucket_start_ns": start, "bucket_end_ns": start + width,
                                 "count": len(values), "sum": sum(values), "min": values[0], "max": values[-1],
                                 "avg": sum(values) / len(values)}
        if len(values) >= 5:
            entry["percentiles"] = {f"p{p}": percentile(values, p) for p in (50, 75, 90, 95, 99)}
        out.append(entry)
    return out
