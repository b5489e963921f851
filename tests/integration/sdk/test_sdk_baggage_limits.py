"""A caller's ``baggage`` header cannot flood a callee's log, nor put its contents there.

Before (attack on the SDK's telemetry): OpenTelemetry's W3C baggage propagator, which extracts every call's header,
logged at WARNING on every call the whole header when over 8,192 bytes (50 calls with a 257 KB header: 12.9 MB of
log) and each list-member it dropped with its text (an 8 KB header of 4,000 invalid members: 181 lines per call),
so the baggage (user ids, tokens) landed in the callee's log. Now the SDK says one warning at most every
``BAGGAGE_WARNING_INTERVAL_S``, with the header's size only; what the handler gets is what the propagator extracts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from opentelemetry import baggage
from opentelemetry.propagate import extract

from iii import OtelConfig, telemetry

from .conftest import MakeWorker, RealEngineThread, workers_of

pytestmark = [pytest.mark.our_engine("sends calls with a hostile baggage header straight to our engine"),
              pytest.mark.usefixtures("fresh_telemetry")]

ON = OtelConfig(enabled=True, service_name="baggage-limits", fetch_instrumentation_enabled=False,
                metrics_enabled=False, logs_enabled=False)
OVERSIZED = ",".join(f"k{i}=v{i}" for i in range(20_000))  # 257,779 bytes
INVALID = "good=1," + ",".join(["x"] * 4_000)  # 8,006 bytes: within the byte limit, 4,001 list-members
MANY = ",".join(f"k{i}=v{i}" for i in range(200))  # valid, 200 list-members: the first 180 are taken
OTEL_LOGGER = "opentelemetry.baggage.propagation"


@pytest.fixture
def make_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    yield from workers_of(real.url)


@pytest.fixture(autouse=True)
def first_warning_due() -> None:
    """The warning is rate-limited per process: each test starts as if none had been said yet."""
    warnings: Any = getattr(telemetry, "_baggage_warnings", None)
    if warnings is not None:
        warnings._told = float("-inf")
        warnings._untold = 0


def callee(real: RealEngineThread, make_worker: MakeWorker) -> list[dict[str, str]]:
    """A worker with telemetry on serving ``t::bag``, which records the baggage each run sees."""
    worker = make_worker("callee", otel=ON)
    seen: list[dict[str, str]] = []

    async def on_bag(data: Any) -> Any:
        seen.append(telemetry.get_all_baggage())
        return "ok"

    worker.register_function("t::bag", on_bag)
    real.wait_registered("t::bag")
    return seen


def call_with(url: str, baggage: str, times: int) -> None:
    """``times`` calls of ``t::bag`` carrying ``baggage``, from a raw connection (any caller may send any header)."""
    async def calls() -> None:
        async with websockets.connect(url, max_size=None) as ws:
            for _ in range(times):
                invocation = str(uuid.uuid4())
                await ws.send(json.dumps({"type": "invokefunction", "invocation_id": invocation,
                                          "function_id": "t::bag", "data": {}, "baggage": baggage}))
                while True:
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if answer.get("invocation_id") == invocation:
                        assert answer.get("result") == "ok", answer
                        break

    asyncio.run(calls())


def said(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """(OpenTelemetry's baggage records, the SDK's baggage warnings) caught."""
    otel = [record.getMessage() for record in caplog.records if record.name == OTEL_LOGGER]
    ours = [record.getMessage() for record in caplog.records
            if record.name == "iii.telemetry" and "baggage header" in record.getMessage()]
    return otel, ours


def expected(header: str) -> dict[str, str]:
    """What OpenTelemetry's own propagators extract from ``header`` (its records held back from the test's log)."""
    logger = logging.getLogger(OTEL_LOGGER)
    was, logger.disabled = logger.disabled, True
    try:
        return {key: str(value) for key, value in baggage.get_all(extract({"baggage": header})).items()}
    finally:
        logger.disabled = was


@pytest.mark.parametrize(("header", "kept", "size"), [
    (OVERSIZED, {}, "257779 bytes, 20000 list-members"),
    (INVALID, {"good": "1"}, "8006 bytes, 4001 list-members"),
    (MANY, {f"k{i}": f"v{i}" for i in range(180)}, "1779 bytes, 200 list-members"),
], ids=["over-8192-bytes", "4000-invalid-members", "200-members"])
def test_a_hostile_header_is_one_warning_with_no_content(real: RealEngineThread, make_worker: MakeWorker,
                                                         caplog: pytest.LogCaptureFixture, header: str,
                                                         kept: dict[str, str], size: str) -> None:
    seen = callee(real, make_worker)
    assert expected(header) == kept  # what the propagator itself takes: unchanged
    with caplog.at_level(logging.WARNING):
        call_with(real.url, header, 20)
    assert seen == [kept] * 20
    otel, ours = said(caplog)
    assert otel == []  # (were 20 to 3,620 records, with the header's text)
    assert len(ours) == 1, ours  # rate-limited: the other 19 are counted in the next one
    assert size in ours[0] and "contents are not logged" in ours[0]
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "k1=v1" not in logged and "`x`" not in logged


def test_a_valid_header_is_taken_without_a_word(real: RealEngineThread, make_worker: MakeWorker,
                                                caplog: pytest.LogCaptureFixture) -> None:
    seen = callee(real, make_worker)
    with caplog.at_level(logging.WARNING):
        call_with(real.url, "user=alice,tier=gold%20plus", 3)
    assert seen == [{"user": "alice", "tier": "gold plus"}] * 3
    assert said(caplog) == ([], [])


@pytest.mark.parametrize("traceparent", [None, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "garbage"],
                         ids=["none", "plain", "generic-path"])
def test_extract_context_is_quiet_and_unchanged(caplog: pytest.LogCaptureFixture, traceparent: str | None) -> None:
    """``extract_context`` (and so ``extract_baggage``'s generic path, taken for a traceparent not in the plain
    form) gives the propagators' baggage, without their records."""
    for header in (OVERSIZED, INVALID, MANY):
        with caplog.at_level(logging.WARNING):
            ctx = telemetry.extract_context(traceparent, header)
            alone = telemetry.extract_baggage(header)
        assert dict(baggage.get_all(ctx)) == expected(header) == dict(baggage.get_all(alone))
    otel, ours = said(caplog)
    assert otel == [] and len(ours) == 1
