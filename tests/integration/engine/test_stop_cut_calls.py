"""A call still pending in a worker when the engine stops ends saying the engine is stopping.

Before: the stop closed the workers' connections first and ended the calls after, so each call pending in a
worker was ended by its callee's disconnect: a fired call logged "its callee's worker disconnected before
answering", a module's call raised it and a calling worker was told it, blaming a worker the stop had cut off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the messages of our engine's stop")]

STOPPING = "Invocation of slow::never stopped: the engine is stopping"


def _engine() -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                      modules=[ModuleSpec("modules::pubsub::PubSubModule", {})]))


async def _callee(engine: Engine) -> RawWorker:
    callee = await RawWorker.connect(engine.url)
    await callee.register("slow::never")
    await callee.sync()
    return callee


async def test_a_fired_call_cut_by_the_stop_logs_that_the_engine_is_stopping(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine.invocations")
    engine = _engine()
    await engine.start()
    try:
        callee = await _callee(engine)
        topic = f"stop-{uuid.uuid4()}"
        await callee.send({"type": "registertrigger", "id": f"sub-{topic}", "trigger_type": "subscribe",
                           "function_id": "slow::never", "config": {"topic": topic}})
        await callee.sync()
        await engine.invoke("publish", {"topic": topic, "data": {"n": 1}})
        await callee.expect("invokefunction", function_id="slow::never")  # never answered
    finally:
        await engine.stop()
    failures = [record.getMessage() for record in caplog.records
                if record.getMessage().startswith("trigger-fired call of slow::never failed")]
    assert failures == [f"trigger-fired call of slow::never failed: invocation_stopped: {STOPPING}"]


async def test_an_engine_call_cut_by_the_stop_raises_that_the_engine_is_stopping() -> None:
    engine = _engine()
    await engine.start()
    try:
        callee = await _callee(engine)
        call = asyncio.ensure_future(engine.invoke("slow::never", None))
        await callee.expect("invokefunction")
    finally:
        await engine.stop()
    with pytest.raises(EngineError) as stopped:
        await asyncio.wait_for(call, 5)
    assert (stopped.value.code, stopped.value.message) == ("invocation_stopped", STOPPING)


async def test_a_worker_call_cut_by_the_stop_is_answered_that_the_engine_is_stopping() -> None:
    engine = _engine()
    await engine.start()
    posted: list[dict[str, Any]] = []
    try:
        callee = await _callee(engine)
        caller = await RawWorker.connect(engine.url)
        await caller.sync()
        connection = engine.workers[caller.worker_id]
        post = connection.post

        def record(text: str) -> bool:
            # what the engine hands the caller's connection, whether or not the socket still takes it
            posted.append(json.loads(text))
            return post(text)

        connection.post = record  # type: ignore[method-assign]
        invocation_id = str(uuid.uuid4())
        await caller.send({"type": "invokefunction", "invocation_id": invocation_id, "function_id": "slow::never",
                           "data": None})
        await callee.expect("invokefunction")
        # the caller reads nothing more, so its close handshake waits while the callee's ends at once: the callee's
        # disconnect ends the call with the caller still connected (else which one closes first is down to chance)
        caller.ws.transport.pause_reading()
    finally:
        await engine.stop()
    results = [frame for frame in posted if frame.get("type") == "invocationresult"]
    assert [(frame["invocation_id"], frame["error"]) for frame in results] == [
        (invocation_id, {"code": "invocation_stopped", "message": STOPPING})]
