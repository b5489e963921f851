"""A trigger-fired call (pub/sub, cron, state, stream, log triggers) whose worker refused it for being busy (our
SDK's ``worker_busy``: the handler never ran) is asked again, after about 0.1, 0.2, 0.4, 0.8, 1.6 and 3.2 s (a random
50-100 % of each), holding its slots; only a worker busy through all of them loses the event, counted in one
rate-limited warning. Before, each refusal was a lost event and an INFO line: a short busy spell dropped every event
published meanwhile."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iii.protocol.client import worker_busy
from iii_engine import Engine, EngineConfig
from tests.integration.engine.raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("fires a call from inside our engine")]


async def _answer_busy(worker: RawWorker, times: int) -> list[dict[str, Any]]:
    """Refuse the next ``times`` invocations as a busy SDK worker does; return them."""
    refused = []
    for _ in range(times):
        frame = await worker.expect("invokefunction")
        refused.append(frame)
        await worker.send({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                           "function_id": frame["function_id"], "error": worker_busy(frame["function_id"], 1)})
    return refused


async def _registered(worker: RawWorker, *function_ids: str) -> None:
    for function_id in function_ids:
        await worker.register(function_id)
    await worker.sync()


async def _state_trigger(worker: RawWorker) -> None:
    await _registered(worker, "w::f")
    await worker.send({"type": "registertrigger", "id": "t-state", "trigger_type": "state",
                       "function_id": "w::f", "config": {"scope": "s"}})
    await worker.sync()


async def _settled(engine: Engine) -> None:
    """Return once no trigger-fired call holds a slot: the fired task's end tells nothing."""
    while engine.fired_calls.in_flight:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def test_a_fired_call_refused_busy_is_asked_again_and_runs(caplog: pytest.LogCaptureFixture) -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f")
        with caplog.at_level(logging.INFO, logger="iii_engine"):
            assert engine.fire("w::f", {"n": 1})
            refused = await _answer_busy(worker, 3)
            served = await worker.serve_one("done")  # before: never asked again
            assert served["data"] == {"n": 1} and all(frame["data"] == {"n": 1} for frame in refused)
            await _settled(engine)
        assert engine.invocations.busy_fired == 0
        assert not [r for r in caplog.records if "w::f" in r.getMessage()], caplog.text
        await worker.close()


async def test_a_worker_busy_through_every_try_loses_the_event_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f")
        with caplog.at_level(logging.WARNING, logger="iii_engine"):
            assert engine.fire("w::f", {"n": 1})
            await _answer_busy(worker, 7)  # the first call and six more tries
            await _settled(engine)
            await worker.nothing_for(0.2)  # no eighth try
        assert engine.invocations.busy_fired == 1
        lines = [r.getMessage() for r in caplog.records if "stayed busy" in r.getMessage()]
        assert len(lines) == 1 and "1 trigger-fired call(s) not run" in lines[0] and "w::f" in lines[0], lines
        await worker.close()


async def test_a_state_trigger_refused_busy_is_asked_again() -> None:
    # State and stream triggers run through TriggerSet.call, not fire(): before, the refusal was a warning and the
    # change was lost.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _state_trigger(worker)
        await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 1})
        await _answer_busy(worker, 2)
        served = await worker.serve_one("done")  # before: never asked again
        assert served["function_id"] == "w::f" and served["data"]["key"] == "k"
        assert engine.invocations.busy_fired == 0
        await worker.close()


async def test_a_condition_refused_busy_is_asked_again_then_its_call_made() -> None:
    # A subscriber's condition usually lives on the worker of its handler: before, its busy refusal was "skip"
    # and a warning per event.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f", "w::guard")
        await worker.send({"type": "registertrigger", "id": "t-sub", "trigger_type": "subscribe",
                           "function_id": "w::f", "config": {"topic": "t", "condition_function_id": "w::guard"}})
        await worker.sync()
        await engine.invoke("publish", {"topic": "t", "data": {"n": 1}})
        refused = await _answer_busy(worker, 2)
        assert {frame["function_id"] for frame in refused} == {"w::guard"}
        await worker.serve_one(True, function_id="w::guard")
        served = await worker.serve_one("done", function_id="w::f")
        assert served["data"] == {"n": 1}
        await worker.close()


async def test_a_try_meeting_the_engine_s_stop_is_not_counted_as_a_missing_function() -> None:
    # The stop closes the workers' connections first: a try waking then found no worker serving the function, and
    # a clean stop warned "no worker serves their function" (5 of 12 stops with calls asleep between tries).
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f")
        assert engine.fire("w::f", {"n": 1})
        await _answer_busy(worker, 1)
        engine.invocations.stopping()  # the stop's first step, then its closing of the connections
        await worker.close()
        await _settled(engine)  # the next try (in 50-100 ms) ends the call
        assert engine.invocations.missing_fired == 0  # before: 1


async def test_a_cron_tick_refused_busy_is_not_asked_again_once_the_next_tick_is_due() -> None:
    # Before, each tick was asked again for up to 6.3 s: an every-second schedule's ticks ran late, in a burst and
    # out of order. Now a tick's tries end before the next tick fires.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f")
        await worker.send({"type": "registertrigger", "id": "t-cron", "trigger_type": "cron",
                           "function_id": "w::f", "config": {"expression": "* * * * * *"}})
        await worker.sync()
        refused = await _answer_busy(worker, 25)
        ticks = [frame["data"]["scheduled_time"] for frame in refused]
        assert ticks == sorted(ticks), ticks  # no tick asked again after a later one
        assert len(set(ticks)) >= 3
        assert engine.invocations.busy_fired >= 2
        await worker.close()


async def test_a_refused_call_is_asked_again_as_soon_as_its_worker_answers_another() -> None:
    # A call the worker answers frees one of its max_invocations: the oldest refused call waiting is asked again at
    # once. Before, it slept out its wait however idle the worker became (a burst's worker worked 35-59 % of it).
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f", "w::hold")
        holding = asyncio.create_task(engine.invoke("w::hold", {}))
        held = await worker.expect("invokefunction", function_id="w::hold")  # the worker's only slot, say
        assert engine.fire("w::f", {"n": 1})
        await _answer_busy(worker, 5)  # its next wait is 0.8-1.6 s
        await worker.sync()
        loop = asyncio.get_running_loop()
        freed = loop.time()
        await worker.send({"type": "invocationresult", "invocation_id": held["invocation_id"],
                           "function_id": "w::hold", "result": "done"})
        served = await worker.serve_one("done", function_id="w::f")
        assert loop.time() - freed < 0.6  # before: at least 0.8 s
        assert served["data"] == {"n": 1} and await holding == "done"
        await worker.close()
