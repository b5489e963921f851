"""A ``Logger`` given arguments it cannot use as they are still sends its records, and loses no other record.

Before (attack on the SDK's telemetry): a trace id of 40 hex digits was written as such, the engine refused the
whole LOGS frame it was in (99 of 100 records of a batch lost, the SDK saying nothing); a trace id that was no hex,
a UUID's text, or ``service_name=123`` sent the record to stdlib logging instead of the engine; so did ``data``
whose iteration raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from iii import OtelConfig, telemetry
from iii.logger import Logger
from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

from .conftest import MakeWorker, ServedOnThread, engine_test_config, workers_of

pytestmark = [pytest.mark.our_engine("reads the records our engine stored"),
              pytest.mark.usefixtures("fresh_telemetry")]

BATCHED = OtelConfig(enabled=True, service_name="logger-bad-arguments", fetch_instrumentation_enabled=False,
                     metrics_enabled=False, logs_enabled=True, logs_batch_size=100, logs_flush_interval_ms=60_000)


def _engine() -> Engine:
    config = engine_test_config()
    modules = [*config.modules, ModuleSpec("modules::observability::OtelModule", {})]
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules))


@pytest.fixture
def served() -> Iterator[ServedOnThread[Engine]]:
    served = ServedOnThread(_engine)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def make_worker(served: ServedOnThread[Engine]) -> Iterator[MakeWorker]:
    yield from workers_of(served.url)


class Unreadable(list[int]):
    def __iter__(self) -> Any:
        raise RuntimeError("no")


def test_bad_ids_and_odd_arguments_lose_no_record(served: ServedOnThread[Engine], make_worker: MakeWorker,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker("w", otel=BATCHED)
    worker.list_functions()
    good = Logger(service_name="good")
    for n in range(5):
        good.info(f"good {n}")
    with caplog.at_level(logging.WARNING, logger="iii.logger"):
        Logger(trace_id="ab" * 20, span_id="ab" * 9).info("ids too long")
        Logger(trace_id="zz").info("ids not hex")
    Logger(trace_id="4bf92f35-77b3-4da6-a3ce-929d0e0e4736").info("a UUID's text")
    Logger(service_name=123).info("numeric service")  # type: ignore[arg-type]
    good.info("unreadable data", Unreadable([1]))
    for n in range(5, 10):
        good.info(f"good {n}")
    assert telemetry.force_flush(5_000)

    def stored() -> dict[str, dict[str, Any]]:
        answer = worker.trigger({"function_id": "engine::logs::list", "payload": {"limit": 1000}})
        return {entry["body"]: entry for entry in answer["logs"]}

    observability: Any = served.engine.module("observability")
    served.run(until(lambda: len(observability.logs) >= 15))  # telemetry is ingested by a task of the engine
    logs = stored()
    assert {f"good {n}" for n in range(10)} <= set(logs)
    assert {"ids too long", "ids not hex", "a UUID's text", "numeric service", "unreadable data"} <= set(logs)
    assert logs["a UUID's text"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert not logs["ids too long"].get("trace_id")
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "trace_id 'abab" in said and "is not 32 hex digits" in said and "span_id" in said
