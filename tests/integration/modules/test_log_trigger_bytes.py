"""A log trigger whose handler never answers: each call it is fired keeps its log entry alive until the answer, so
the fan-out holds the entry's bytes under max_fired_bytes and the share of the engine's own fired calls, and past it
the calls are skipped, counted and logged, not kept (before, 1 MB entries piled up in calls held for good)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.limits import ENGINE_OWN, FiredCalls
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_ao_observability_attack import log_frame, send, telemetry
from tests.integration.modules.test_observability import OTEL, eventually

pytestmark = pytest.mark.our_engine("configures the observability module and the fired-call bounds")

SHARE = 8 * 1024 * 1024  # max_call_bytes_per_worker: the engine's own fan-outs hold at most this many bytes
BODY = 1024 * 1024
FRAMES = 40


async def test_log_trigger_calls_that_are_never_answered_hold_their_entries_bytes() -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(OTEL, {})], max_call_bytes_per_worker=SHARE)
    async with Engine(config=config) as engine, ModuleWorker(engine.url) as producer:
        hung = await RawWorker.connect(engine.url)  # reads its calls, never answers them
        await hung.register("hung::sink")
        await hung.send({"type": "registertrigger", "id": "t-all", "trigger_type": "log",
                         "function_id": "hung::sink", "config": {}})
        await hung.sync()
        for i in range(FRAMES):
            await send(producer, log_frame(f"{i:04d}" + "x" * BODY))

        async def ingested() -> bool:
            return bool((await telemetry(producer))["ingested_frames"] == FRAMES)

        assert await eventually(ingested, within=20)
        stats = engine.fired_calls.stats()
        # before: 40 calls in flight holding 0 bytes (40 MB of entries kept alive past the store's eviction)
        assert 0 < stats["bytes_in_flight"] <= SHARE
        assert engine.fired_calls.engine_own.call_bytes == stats["bytes_in_flight"]
        assert stats["in_flight"] < FRAMES and stats["skipped"] == FRAMES - stats["in_flight"]
        first: dict[str, Any] = await hung.expect("invokefunction")
        assert first["function_id"] == "hung::sink" and first["data"]["body"].startswith("0000")
        await hung.close()

        async def given_back() -> bool:
            await asyncio.sleep(0)
            return engine.fired_calls.in_flight == 0
        assert await eventually(given_back, within=5)
        assert engine.fired_calls.bytes_in_flight == 0 and engine.fired_calls.engine_own.call_bytes == 0


def test_the_engines_own_share_is_named_when_past_it() -> None:
    fired = FiredCalls(8, max_fired_bytes=1000, max_call_bytes_per_worker=300)
    assert fired.try_take(3, 100) is not None
    assert fired.try_take(1, 100) is None
    over = fired._over_share
    assert over is not None and over[2].worker is fired.engine_own and fired.engine_own.id == ENGINE_OWN
    assert fired._past(*over) == ("the engine's own trigger-fired calls (log triggers) hold 300 bytes of payloads, "
                                  "and these would hold 100 more (max_call_bytes_per_worker 300)")
