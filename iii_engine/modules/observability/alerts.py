"""Alert rules from the configuration, evaluated against the call counters and the metric store.

A rule names a metric, a threshold and an operator; ``iii.invocations.*`` and ``iii.workers.*`` read the
engine's cumulative counters, any other name reads the metrics workers sent within the rule's window (sum for
counters and histograms, mean for gauges). A rule that is firing triggers its action at most once per cooldown.
A sum beyond the largest double is compared as infinite and reported as ``±1.7976931348623157e308``
(``sys.float_info.max``): JSON has no infinity, and an infinite value made every alert answer fail.

Example:
    >>> rule = AlertRule.parse({"name": "busy", "metric": "iii.invocations.total", "threshold": 1})
    >>> manager = AlertManager([rule])
    >>> [e["name"] for e in manager.evaluate({"iii.invocations.total": 5.0}, [], now_ms=1000)]
    ['busy']
    >>> manager.evaluate({"iii.invocations.total": 5.0}, [], now_ms=2000)  # inside the 60 s cooldown
    []
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import field_validator

from ...settings import Field, NonEmpty, Settings, UnknownKeys
from .queries import mean, total

__all__ = ["AlertManager", "AlertRule"]

_OPERATORS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    ">": ("GreaterThan", lambda v, t: v > t),
    ">=": ("GreaterThanOrEqual", lambda v, t: v >= t),
    "<": ("LessThan", lambda v, t: v < t),
    "<=": ("LessThanOrEqual", lambda v, t: v <= t),
    "==": ("Equal", lambda v, t: math.isclose(v, t, rel_tol=0.0, abs_tol=2.220446049250313e-16)),
    "!=": ("NotEqual", lambda v, t: not math.isclose(v, t, rel_tol=0.0, abs_tol=2.220446049250313e-16)),
}
_ALIASES = {"greaterthan": ">", "greaterthanorequal": ">=", "lessthan": "<", "lessthanorequal": "<=",
            "equal": "==", "notequal": "!="}


class AlertRule(Settings):
    """One configured rule (``alerts[i]`` of the module settings; a key it does not know is refused, as production
    refuses it: ignored, ``operater: "<"`` left the rule on ``>``, firing exactly when it should not).

    Example:
        >>> AlertRule.parse({"name": "x", "metric": "m", "threshold": "high"}, at="alerts[0]")
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: alerts[0].threshold: must be a number, got 'high'
        >>> AlertRule.parse({"name": "x", "metric": "m", "threshold": 1, "operater": "<"}, at="alerts[0]")
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: alerts[0]: unknown key 'operater' (did you mean 'operator'? allowed: action, \
cooldown_seconds, enabled, metric, name, operator, threshold, window_seconds)
    """

    unknown_keys: ClassVar[UnknownKeys] = "forbid"
    label: ClassVar[str] = "alert rule"

    name: NonEmpty
    metric: NonEmpty
    threshold: float
    operator: str = ">"
    window_seconds: float = 60.0
    cooldown_seconds: float = 60.0
    enabled: bool = True
    action: dict[str, Any] = Field(default_factory=lambda: {"type": "log"})

    @field_validator("operator", mode="before")
    @classmethod
    def _operator(cls, raw: Any) -> str:
        operator = str(raw).strip()
        operator = _ALIASES.get(operator.lower(), operator)
        if operator not in _OPERATORS:
            raise ValueError(f"unknown operator {raw!r} (one of {', '.join(_OPERATORS)} or their names)")
        return operator

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, raw: Any) -> Any:
        action = raw or {"type": "log"}
        kind = action.get("type") if isinstance(action, Mapping) else None
        if kind not in ("log", "webhook", "function"):
            raise ValueError("action type must be log, webhook or function")
        if kind == "webhook" and not isinstance(action.get("url"), str):
            raise ValueError("a webhook action needs a 'url'")
        if kind == "function" and not isinstance(action.get("path"), str):
            raise ValueError("a function action needs a 'path' (the function id)")
        return dict(action)

    @property
    def operator_name(self) -> str:
        """Production's spelling (``GreaterThan`` …)."""
        return _OPERATORS[self.operator][0]


def _metric_value(metric: str, window_s: float, entries: Sequence[dict[str, Any]], now_ns: int) -> float | None:
    named = [e for e in entries if e["name"] == metric]
    if not named:
        return None
    if window_s <= 0:
        points = [p["value"] for p in named[-1]["data_points"] if p.get("value") is not None]
        return float(points[0]) if points else None
    recent = [e for e in named if e["timestamp_unix_nano"] >= now_ns - int(window_s * 1e9)]
    if not recent:
        return None
    values = [float(p["value"]) for e in recent for p in e["data_points"] if p.get("value") is not None]
    if not values:
        return None
    if recent[0]["metric_type"] == "gauge":
        return mean(values)
    return total(values)


class AlertManager:
    """Holds the rules and their state; :meth:`evaluate` returns the alert events that triggered."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self.rules = list(rules)
        self.states: dict[str, dict[str, Any]] = {}

    def evaluate(self, counters: Mapping[str, float], metrics: Sequence[dict[str, Any]],
                 now_ms: int) -> list[dict[str, Any]]:
        """One evaluation pass; ``counters`` maps ``iii.invocations.*`` / ``iii.workers.*`` names to values."""
        events: list[dict[str, Any]] = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            value = counters.get(rule.metric)
            if value is None and not rule.metric.startswith(("iii.invocations.", "iii.workers.")):
                value = _metric_value(rule.metric, rule.window_seconds, metrics, now_ms * 1_000_000)
            if value is None:
                continue
            firing = _OPERATORS[rule.operator][1](value, rule.threshold)
            value = max(-sys.float_info.max, min(sys.float_info.max, value))  # reported: JSON has no infinity
            state = self.states.setdefault(rule.name, {"name": rule.name, "last_triggered": None})
            state.update(firing=firing, last_evaluated=now_ms, current_value=value, threshold=rule.threshold,
                         operator=rule.operator_name)
            last = state["last_triggered"]
            if firing and (last is None or now_ms - last >= rule.cooldown_seconds * 1000):
                state["last_triggered"] = now_ms
                events.append({"name": rule.name, "metric": rule.metric, "value": value,
                               "threshold": rule.threshold, "operator": rule.operator_name, "firing": True,
                               "timestamp": now_ms})
        return events

    def rule(self, name: str) -> AlertRule:
        """The rule called ``name``."""
        return next(rule for rule in self.rules if rule.name == name)
