"""A log trigger whose handler never answers: each call it is fired keeps its log entry alive until the answer, so
each call holds the entry's bytes under max_fired_bytes and its callee worker's max_call_bytes_per_worker (for such
payloads), and past it that callee's calls are skipped, counted and logged, not kept (before, 1 MB entries piled up
in calls held for good); another worker's log trigger is not held up by it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.limits import FiredCalls
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_ao_observability_attack import log_frame, send, telemetry
from tests.integration.modules.test_observability import OTEL, eventually

pytestmark = pytest.mark.our_engine("configures the observability module and the fired-call bounds")

SHARE = 8 * 1024 * 1024  # max_call_bytes_per_worker: the engine's own fan-outs hold at most this many bytes
BODY = 1024 * 1024
FRAMES = 40


async def _hung_sink(engine: Engine, function_id: str) -> RawWorker:
    hung = await RawWorker.connect(engine.url)  # reads its calls, never answers them
    await hung.register(function_id)
    await hung.send({"type": "registertrigger", "id": f"t-{function_id}", "trigger_type": "log",
                     "function_id": function_id, "config": {}})
    await hung.sync()
    return hung


async def _ingested(producer: ModuleWorker, frames: int) -> None:
    async def done() -> bool:
        return bool((await telemetry(producer))["ingested_frames"] == frames)

    assert await eventually(done, within=20)


async def test_log_trigger_calls_that_are_never_answered_hold_their_entries_bytes() -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, {})], max_call_bytes_per_worker=SHARE)
    async with Engine(config=config) as engine, ModuleWorker(engine.url) as producer:
        hung = await _hung_sink(engine, "hung::sink")
        for i in range(FRAMES):
            await send(producer, log_frame(f"{i:04d}" + "x" * BODY))
        await _ingested(producer, FRAMES)
        fired = engine.fired_calls
        stats = fired.stats()
        # before: 40 calls in flight holding 0 bytes (40 MB of entries kept alive past the store's eviction)
        assert 0 < stats["bytes_in_flight"] <= SHARE
        assert fired._own_bytes[hung.worker_id].call_bytes == stats["bytes_in_flight"]
        assert fired.engine_own.call_bytes == 0  # handed to its callee
        assert stats["in_flight"] < FRAMES and stats["skipped_callee_share"] == FRAMES - stats["in_flight"]
        first: dict[str, Any] = await hung.expect("invokefunction")
        assert first["function_id"] == "hung::sink" and first["data"]["body"].startswith("0000")
        await hung.close()

        async def given_back() -> bool:
            await asyncio.sleep(0)
            return fired.in_flight == 0
        assert await eventually(given_back, within=5)
        assert fired.bytes_in_flight == 0 and fired._own_bytes == {}


async def test_a_hung_log_trigger_does_not_hold_up_another_workers() -> None:
    got: list[str] = []
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, {})], max_call_bytes_per_worker=SHARE)
    async with Engine(config=config) as engine, ModuleWorker(engine.url) as producer, \
            ModuleWorker(engine.url) as healthy:
        async def sink(data: Any) -> None:
            got.append(data["body"][:4])

        await healthy.function("ok::sink", sink)
        await healthy.trigger("t-ok", "log", "ok::sink", {})
        hung = await _hung_sink(engine, "hung::sink")
        for i in range(FRAMES):
            await send(producer, log_frame(f"{i:04d}" + "x" * BODY))
        await _ingested(producer, FRAMES)

        async def all_there() -> bool:
            return len(got) == FRAMES
        # before (one share for every callee of the engine's own fan-outs): the hung sink held it whole and the
        # healthy one got 9 of 40
        assert await eventually(all_there, within=10)
        assert got == [f"{i:04d}" for i in range(FRAMES)]
        assert engine.fired_calls.stats()["skipped_callee_share"] > 0  # the hung one's, counted
        await hung.close()


def test_a_callees_payload_bytes_are_bounded_per_callee() -> None:
    fired = FiredCalls(8, max_fired_bytes=1000, max_call_bytes_per_worker=300)
    calls = []
    for worker in ("w1", "w1", "w2"):
        slot = fired.try_take(1, 200)
        assert slot is not None
        calls.append(fired.to_callee(slot, worker, f"{worker}::f"))
    assert calls[0] is not None and calls[1] is None and calls[2] is not None  # w1 past its 300 bytes, w2 not
    assert (fired.in_flight, fired.bytes_in_flight, fired.engine_own.call_bytes) == (2, 400, 0)
    assert fired.skipped_callee_share == 1
    for call in (calls[0], calls[2]):
        assert call is not None
        call.release()
    assert (fired.in_flight, fired.bytes_in_flight, fired._own_bytes) == (0, 0, {})
