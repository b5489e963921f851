"""Alert rules: numbers that cannot be evaluated are refused at config load, naming the rule and the field, and one
rule failing to evaluate does not stop the others (one such rule failed every evaluation pass, and
``engine::alerts::list`` for everyone)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from iii_engine.modules.observability import alerts
from iii_engine.modules.observability.alerts import AlertManager, AlertRule
from iii_engine.modules.observability.settings import ObservabilitySettings
from iii_engine.settings import ConfigError


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("threshold", float("nan"), "finite"), ("threshold", float("inf"), "finite"),
    ("window_seconds", float("inf"), "finite"), ("window_seconds", 1e300, "<="), ("window_seconds", -5.0, ">="),
    ("cooldown_seconds", float("nan"), "finite"), ("cooldown_seconds", -1.0, ">="),
])
def test_a_rule_with_numbers_it_cannot_use_is_refused(field: str, value: float, problem: str) -> None:
    rules = [{"name": "fine", "metric": "m", "threshold": 1},
             {"name": "bad", "metric": "m", "threshold": 1, field: value}]
    with pytest.raises(ConfigError) as refused:
        ObservabilitySettings.from_config({"alerts": rules}, env={})
    assert f"alerts[1].{field}" in str(refused.value) and problem in str(refused.value)


def test_limits_that_make_sense_are_accepted() -> None:
    rule = AlertRule.parse({"name": "x", "metric": "m", "threshold": -1e308, "window_seconds": 0,
                            "cooldown_seconds": 366 * 86_400})
    assert rule.window_seconds == 0 and rule.threshold == -1e308


def test_one_rule_failing_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    real = alerts._metric_value

    def value(metric: str, *args: Any) -> float | None:
        if metric == "broken":
            raise OverflowError("cannot convert float infinity to integer")
        return real(metric, *args)

    monkeypatch.setattr(alerts, "_metric_value", value)
    rules = [AlertRule.parse({"name": name, "metric": metric, "threshold": 0})
             for name, metric in (("a", "iii.invocations.total"), ("b", "broken"), ("c", "iii.invocations.total"))]
    manager = AlertManager(rules)
    with caplog.at_level(logging.ERROR, "iii_engine.modules.observability.alerts"):
        first = manager.evaluate({"iii.invocations.total": 5.0}, [], now_ms=1000)
        manager.evaluate({"iii.invocations.total": 5.0}, [], now_ms=2000)
    assert [e["name"] for e in first] == ["a", "c"] and manager.failed_evaluations == 2
    assert sorted(manager.states) == ["a", "c"]
    assert len([r for r in caplog.records if "alert rule 'b' failed" in r.getMessage()]) == 1  # rate-limited
