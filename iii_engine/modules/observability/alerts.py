"""Alert rules from the configuration, evaluated against the call counters and the metric store.

A rule names a metric, a threshold and an operator; ``iii.invocations.*`` and ``iii.workers.*`` read the
engine's cumulative counters, any other name reads the metrics workers sent within the rule's window (sum for
counters and histograms, mean for gauges; a histogram's, exponential histogram's or summary's point counts as its
``sum``, :func:`~.queries.point_value`). A rule that is firing triggers its action at most once per cooldown.
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

import difflib
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import field_validator

from ...settings import Field, NonEmpty, Settings, UnknownKeys, closest_key
from .queries import mean, point_value, total
from .urls import post_url

__all__ = ["ENGINE_COUNTERS", "AlertManager", "AlertRule", "webhook_url"]

log = logging.getLogger(__name__)

_OPERATORS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    ">": ("GreaterThan", lambda v, t: v > t),
    ">=": ("GreaterThanOrEqual", lambda v, t: v >= t),
    "<": ("LessThan", lambda v, t: v < t),
    "<=": ("LessThanOrEqual", lambda v, t: v <= t),
    "==": ("Equal", lambda v, t: math.isclose(v, t, rel_tol=0.0, abs_tol=2.220446049250313e-16)),
    "!=": ("NotEqual", lambda v, t: not math.isclose(v, t, rel_tol=0.0, abs_tol=2.220446049250313e-16)),
}
MAX_SECONDS = 366 * 86_400
"""The longest ``window_seconds`` / ``cooldown_seconds`` a rule may give (a year)."""
FAILURE_LOG_INTERVAL_S = 10.0
"""A rule whose evaluation fails is logged at most once per this many seconds (the others are still evaluated)."""
ENGINE_COUNTERS: tuple[str, ...] = (
    "iii.invocations.total", "iii.invocations.success", "iii.invocations.error", "iii.invocations.deferred",
    "iii.workers.spawns", "iii.workers.deaths", "iii.workers.active")
"""The metric names a rule reads from the engine's own counters; the rest of ``iii.invocations.*`` and
``iii.workers.*`` names nothing (a rule on them never fires), other names read the metrics workers send."""
_COUNTER_PREFIXES = ("iii.invocations.", "iii.workers.")
_NEAR_COUNTER = 0.9
"""How alike (difflib's ratio) a worker metric's ``iii.*`` name and an engine counter's must be to be taken for a typo
of it (``iii.invocation.total``: 0.98; the SDK's ``iii.worker.cpu.percent``: 0.65)."""
_ACTION_KEYS: dict[str, tuple[str, ...]] = {"log": ("type",), "webhook": ("type", "url"),
                                            "function": ("type", "path")}
_ALIASES = {"greaterthan": ">", "greaterthanorequal": ">=", "lessthan": "<", "lessthanorequal": "<=",
            "equal": "==", "notequal": "!="}


def webhook_url(url: Any) -> str:
    """``url`` if it can be posted to: an ``http://`` or ``https://`` URL with a host that is an IP address or a
    valid host name (before, ``"not a url"``, ``ftp://...`` or ``""`` passed the start and failed four times at each
    alert, and ``http://hooks..example.com/`` failed each delivery with an uncounted ``UnicodeError``). A refused URL
    is shown as :func:`~.urls.shown_url` shows it: its path (where Slack's and others' secrets are) left out.

    Example:
        >>> webhook_url("https://hooks.example.com/alert")
        'https://hooks.example.com/alert'
        >>> webhook_url("ftp://u:s3cret@files.example.com/SECRET")
        Traceback (most recent call last):
        ...
        ValueError: a webhook action's 'url' must be an http:// or https:// URL with a host, got 'ftp://u:***@files.example.com/…'
        >>> webhook_url("http://hooks..example.com/alert")
        Traceback (most recent call last):
        ...
        ValueError: a webhook action's 'url' has a host no request can be sent to (an empty label): 'http://hooks..example.com/…'
    """
    if not isinstance(url, str):
        raise ValueError("a webhook action needs a 'url'")
    post_url(url, "a webhook action's 'url' ")
    return url


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
        >>> AlertRule.parse({"name": "x", "metric": "iii.invocations.totl", "threshold": 1},
        ...                 at="alerts[0]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: alerts[0].metric: no engine counter is named 'iii.invocations.totl' (did \
you mean 'iii.invocations.total'? the engine's counters: iii.invocations.total, ...)
    """

    unknown_keys: ClassVar[UnknownKeys] = "forbid"
    label: ClassVar[str] = "alert rule"

    name: NonEmpty
    metric: NonEmpty
    # Finite, and the times within a year: NaN, infinity or 1e300 passed before, and one such rule made every
    # evaluation pass fail (internal_error) and engine::alerts::list fail for everyone.
    threshold: float = Field(allow_inf_nan=False)
    operator: str = ">"
    window_seconds: float = Field(60.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    cooldown_seconds: float = Field(60.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    enabled: bool = True
    action: dict[str, Any] = Field(default_factory=lambda: {"type": "log"})

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        near = difflib.get_close_matches(metric, ENGINE_COUNTERS, n=1, cutoff=_NEAR_COUNTER)
        if metric.startswith(_COUNTER_PREFIXES) and metric not in ENGINE_COUNTERS:
            # names there are read from the engine's counters only: iii.invocations.totl never fired, without a word
            meant = f"did you mean {near[0]!r}? " if near else ""
            raise ValueError(f"no engine counter is named {metric!r} ({meant}the engine's counters: "
                             f"{', '.join(ENGINE_COUNTERS)})")
        if metric.startswith("iii.") and near and metric not in ENGINE_COUNTERS:
            log.warning("alert rule on %r: no engine counter has that name (did you mean %r?); the rule reads the "
                        "metric of that name workers send", metric, near[0])
        return metric

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
        if kind not in _ACTION_KEYS:
            raise ValueError("action type must be log, webhook or function")
        # A key the action does not use was ignored: a typo (``ur1:``) or ``headers:`` the webhook never sent.
        allowed = _ACTION_KEYS[kind]
        unknown = sorted(str(key) for key in action if key not in allowed)
        if unknown:
            near = closest_key(unknown[0], allowed)
            meant = f"did you mean {near!r}? " if near else ""
            raise ValueError(f"unknown key {unknown[0]!r} in a {kind} action ({meant}allowed: {', '.join(allowed)})")
        if kind == "webhook":
            webhook_url(action.get("url"))
        if kind == "function":
            path = action.get("path")
            if not isinstance(path, str) or not path.strip():
                raise ValueError("a function action needs a 'path' (the function id)")
            if path.strip().startswith("engine::alerts::"):
                # engine::alerts::evaluate as the action evaluated the rules again from within their own action:
                # with cooldown_seconds 0 it ran 364,835 times in 15 s
                raise ValueError(f"a function action may not call {path!r}: an alert's action would evaluate the "
                                 "alerts again (a loop)")
        return dict(action)

    @property
    def operator_name(self) -> str:
        """Production's spelling (``GreaterThan`` …)."""
        return _OPERATORS[self.operator][0]


def _values(entry: dict[str, Any]) -> list[float]:
    kind = entry.get("metric_type")
    return [value for p in entry["data_points"] if (value := point_value(kind, p)) is not None]


def _metric_value(metric: str, window_s: float, entries: Sequence[dict[str, Any]], now_ns: int) -> float | None:
    """The value a rule on ``metric`` compares: the first point of its latest entry (``window_s`` 0), else the sum
    (mean for gauges) of the points of its entries within the window; a point of a histogram, exponential histogram
    or summary counts as its ``sum`` (before, only ``value`` was read, which they have not: a rule on them never fired).

    Example:
        >>> exp = {"name": "lat", "metric_type": "exponential_histogram", "timestamp_unix_nano": 10**9,
        ...        "data_points": [{"count": 3, "sum": 12.5}]}
        >>> _metric_value("lat", 60, [exp, exp], 2 * 10**9), _metric_value("lat", 0, [exp], 2 * 10**9)
        (25.0, 12.5)
    """
    named = [e for e in entries if e["name"] == metric]
    if not named:
        return None
    if window_s <= 0:
        points = _values(named[-1])
        return points[0] if points else None
    recent = [e for e in named if e["timestamp_unix_nano"] >= now_ns - int(window_s * 1e9)]
    if not recent:
        return None
    values = [value for e in recent for value in _values(e)]
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
        #: rule evaluations that raised (logged at most once per FAILURE_LOG_INTERVAL_S)
        self.failed_evaluations = 0
        self._failure_logged_at = -FAILURE_LOG_INTERVAL_S

    def evaluate(self, counters: Mapping[str, float], metrics: Sequence[dict[str, Any]],
                 now_ms: int) -> list[dict[str, Any]]:
        """One evaluation pass; ``counters`` maps ``iii.invocations.*`` / ``iii.workers.*`` names to values."""
        events: list[dict[str, Any]] = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            try:
                event = self._evaluate(rule, counters, metrics, now_ms)
            except Exception as exc:  # one rule failing must not stop the others (it failed the whole pass)
                self.failed_evaluations += 1
                now = time.monotonic()
                if now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_S:
                    self._failure_logged_at = now
                    log.error("alert rule %r failed to evaluate: %s: %s (%d failed evaluations so far)", rule.name,
                              type(exc).__name__, str(exc)[:200], self.failed_evaluations)
                continue
            if event is not None:
                events.append(event)
        return events

    def _evaluate(self, rule: AlertRule, counters: Mapping[str, float], metrics: Sequence[dict[str, Any]],
                  now_ms: int) -> dict[str, Any] | None:
        """One rule's evaluation: the event if it triggered."""
        value = counters.get(rule.metric)
        if value is None and not rule.metric.startswith(_COUNTER_PREFIXES):
            value = _metric_value(rule.metric, rule.window_seconds, metrics, now_ms * 1_000_000)
        if value is None:
            return None
        firing = _OPERATORS[rule.operator][1](value, rule.threshold)
        value = max(-sys.float_info.max, min(sys.float_info.max, value))  # reported: JSON has no infinity
        state = self.states.setdefault(rule.name, {"name": rule.name, "last_triggered": None})
        state.update(firing=firing, last_evaluated=now_ms, current_value=value, threshold=rule.threshold,
                     operator=rule.operator_name)
        last = state["last_triggered"]
        if firing and (last is None or now_ms - last >= rule.cooldown_seconds * 1000):
            state["last_triggered"] = now_ms
            return {"name": rule.name, "metric": rule.metric, "value": value, "threshold": rule.threshold,
                    "operator": rule.operator_name, "firing": True, "timestamp": now_ms}
        return None

    def rule(self, name: str) -> AlertRule:
        """The rule called ``name``."""
        return next(rule for rule in self.rules if rule.name == name)
