"""One worker's huge (finite) metric values must not make the alert and aggregate queries fail for everyone.
Before, two gauge points of 1.7e308 summed to infinity: engine::alerts::list, engine::alerts::evaluate and
engine::metrics::list with aggregate_interval all failed with serialization_error (NaN/Infinity) for every rule and
caller, and that rule's function action was lost."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pytest
from module_worker import ModuleWorker

from tests.integration.modules.test_ao_observability_attack import send
from tests.integration.modules.test_observability import engine_with, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")

HUGE = 1.7e308


def metrics_frame(name: str, kind: str, values: list[float]) -> bytes:
    points = {"dataPoints": [{"asDouble": value} for value in values]}
    metric = {"name": name, kind: {**points, "isMonotonic": True} if kind == "sum" else points}
    return b"MTRC" + json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}).encode()


async def test_huge_values_neither_fail_the_queries_nor_lose_an_alert_action() -> None:
    rules = [{"name": name, "metric": metric, "threshold": 1, "cooldown_seconds": 0,
              "action": {"type": "function", "path": "alert::sink"}}
             for name, metric in (("gauge", "evil.gauge"), ("counter", "evil.count"), ("legit", "legit.metric"))]
    async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as sink, \
            ModuleWorker(engine.url) as worker:
        received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def collect(data: Any) -> None:
            received.put_nowait(data)

        await sink.function("alert::sink", collect)
        await send(worker, metrics_frame("legit.metric", "gauge", [5.0]))
        await send(worker, metrics_frame("evil.gauge", "gauge", [HUGE, HUGE]))
        await send(worker, metrics_frame("evil.count", "sum", [HUGE, HUGE]))

        async def all_stored() -> bool:
            health = await worker.result("engine::health::check", {})
            return bool(health["components"]["metrics"]["details"]["stored_metrics"] == 3)

        assert await eventually(all_stored, within=5)
        evaluated = await worker.result("engine::alerts::evaluate", {})  # before: serialization_error
        values = {event["name"]: event["value"] for event in evaluated["triggered_alerts"]}
        assert values == {"gauge": HUGE, "counter": sys.float_info.max, "legit": 5.0}
        listed = await worker.result("engine::alerts::list", {})
        assert listed["firing_count"] == 3
        assert {s["name"]: s["current_value"] for s in listed["alerts"]}["counter"] == sys.float_info.max

        now_ms = time.time_ns() // 1_000_000
        answer = await worker.result("engine::metrics::list", {"start_time": 0, "end_time": now_ms + 60_000,
                                                               "aggregate_interval": 3600})
        buckets = {bucket["name"]: bucket for bucket in answer["aggregated_metrics"]}
        assert buckets["evil.gauge"]["sum"] is None and buckets["evil.gauge"]["avg"] == HUGE
        assert buckets["evil.count"]["max"] == HUGE and buckets["legit.metric"]["sum"] == 5.0

        sent: dict[str, float] = {}
        while len(sent) < 3:  # every rule's action reached its function, the huge ones too
            payload = await asyncio.wait_for(received.get(), 10)
            sent[payload["alert"]] = payload["value"]
        assert sent == values
