"""``Logger`` data that is not of a JSON type reaches the engine as its text, not as JSON text of that text.

Before: such a value (datetime, UUID, Decimal, Enum, bytes, set) went through ``json.dumps(default=str)``, so the
engine stored ``"\\"2026-12-06 17:54:15\\""``: literal quotes inside the string. Now it is ``str(value)``, as
OpenTelemetry's own attribute cleaning (and so the reference SDK) makes it; a set or frozenset is a list (sorted
where its members compare), where the reference SDK sends the set's repr (``"{1, 2}"``).

Bytes (``bytearray``, ``memoryview`` too) go as OTLP's ``bytesValue`` in hex, as the reference SDK sends them, and
the engine stores that text (before: ``"b'\\xff\\x00'"``, their ``str()``, where the reference's ``ff00`` was stored as
nothing at all).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
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

OTEL = OtelConfig(enabled=True, service_name="logger-odd-data", fetch_instrumentation_enabled=False,
                  metrics_enabled=False, logs_enabled=True, logs_batch_size=100, logs_flush_interval_ms=60_000)


class Colour(enum.Enum):
    RED = "red"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


WHEN = datetime.datetime(2026, 12, 6, 17, 54, 15)
ID = uuid.UUID("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
CASES: dict[str, tuple[Any, Any]] = {  # message -> (data, what the engine stores as log.data)
    "datetime": ({"at": WHEN}, {"at": "2026-12-06 17:54:15"}),
    "date": ({"on": WHEN.date()}, {"on": "2026-12-06"}),
    "uuid": ({"id": ID}, {"id": "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"}),
    "decimal": ({"price": decimal.Decimal("49.90")}, {"price": "49.90"}),
    "enum": ({"colour": Colour.RED}, {"colour": "Colour.RED"}),
    "bytes": ({"raw": b"\xff\x00"}, {"raw": "ff00"}),
    "bytearray in a list": ([bytearray(b"ab"), memoryview(b"\x01")], ["6162", "01"]),
    "set": ({"tags": {"b", "a", "c"}}, {"tags": ["a", "b", "c"]}),
    "mixed set": ({"odd": {1, "a"}}, {"odd": None}),  # members that do not compare: as iterated (checked below)
    "frozenset": (frozenset({3, 1, 2}), [1, 2, 3]),
    "nested": ([{"at": WHEN, "ids": {ID}}], [{"at": "2026-12-06 17:54:15", "ids": [str(ID)]}]),
    "top-level datetime": (WHEN, "2026-12-06 17:54:15"),
    "unprintable": ({"x": Unprintable()}, {"x": "[unserializable]"}),
}


@pytest.fixture
def served() -> Iterator[ServedOnThread[Engine]]:
    config = engine_test_config()
    modules = [*(config.modules or ()), ModuleSpec("modules::observability::OtelModule", {})]
    served = ServedOnThread(lambda: Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)))
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def make_worker(served: ServedOnThread[Engine]) -> Iterator[MakeWorker]:
    yield from workers_of(served.url)


def test_non_json_values_are_stored_as_their_text(served: ServedOnThread[Engine], make_worker: MakeWorker) -> None:
    worker = make_worker("w", otel=OTEL)
    worker.list_functions()
    logger = Logger(service_name="odd")
    for message, (data, _) in CASES.items():
        logger.info(message, data)
    assert telemetry.force_flush(5_000)
    observability: Any = served.engine.module("observability")
    served.run(until(lambda: len(observability.logs) >= len(CASES)))  # ingested by a task of the engine
    answer = worker.trigger({"function_id": "engine::logs::list", "payload": {"limit": 1000}})
    stored = {entry["body"]: entry["attributes"].get("log.data") for entry in answer["logs"]}
    assert set(CASES) <= set(stored)
    mixed = stored.pop("mixed set")
    assert sorted(mixed["odd"], key=str) == [1, "a"]
    assert {message: stored[message] for message in CASES if message != "mixed set"} == {
        message: want for message, (_, want) in CASES.items() if message != "mixed set"}
