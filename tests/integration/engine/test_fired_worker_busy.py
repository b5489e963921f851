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


async def _refused_change(engine: Engine, worker: RawWorker, value: int) -> dict[str, Any]:
    """Set key ``k`` to ``value`` and refuse its call busy; return once the engine has the refusal."""
    await engine.invoke("state::set", {"scope": "s", "key": "k", "value": value})
    refused = await _answer_busy(worker, 1)
    await worker.sync()
    return refused[0]


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


async def test_changes_of_one_key_reach_the_handler_in_order_while_its_worker_is_busy() -> None:
    # Before, every change after a refused one went out at once and ran before the refused one's retry: the
    # handler saw 2..6 then 1, and its last value was not the key's.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _state_trigger(worker)
        await _refused_change(engine, worker, 1)
        for value in range(2, 7):  # while the first waits to be asked again
            await engine.invoke("state::set", {"scope": "s", "key": "k", "value": value})
        seen = [(await worker.serve_one("done"))["data"]["new_value"] for _ in range(6)]
        assert seen == [1, 2, 3, 4, 5, 6]
        await _settled(engine)
        assert engine.invocations.busy_fired == 0
        await worker.close()


async def test_a_key_s_order_does_not_hold_back_other_keys() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _state_trigger(worker)
        await _refused_change(engine, worker, 1)
        await engine.invoke("state::set", {"scope": "s", "key": "other", "value": 2})
        first = await worker.serve_one("done")  # the other key's change goes at once, not behind k's retry
        assert first["data"]["key"] == "other"
        assert (await worker.serve_one("done"))["data"]["key"] == "k"
        await worker.close()


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


async def test_a_change_waiting_behind_a_busy_one_is_given_up_within_its_own_budget() -> None:
    # Waiting in line counts against a call's own tries: a worker busy for good loses a key's changes one budget
    # (6.3 s) after they began to wait, not one budget each, one after another.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _state_trigger(worker)
        loop = asyncio.get_running_loop()
        began = loop.time()
        values = [(await _refused_change(engine, worker, 1))["data"]["new_value"]]
        await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 2})
        while engine.invocations.busy_fired < 2:
            values.append((await _answer_busy(worker, 1))[0]["data"]["new_value"])
            await worker.sync()  # the engine has the refusal: counted if it was the last
        assert loop.time() - began < 6.3 + 1.5
        assert values == sorted(values) and values[-1] == 2, values  # 2 asked only once 1 was given up
        await worker.nothing_for(0.2)
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


async def test_a_line_opens_once_its_head_is_taken_not_when_its_handler_ends() -> None:
    # Before, the changes behind a refused one waited for its handler to answer: a slow or hung handler held the
    # key's later changes for as long as it ran (20 s in an attack), and their slots with them.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _state_trigger(worker)
        await _refused_change(engine, worker, 1)
        await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 2})
        head = await worker.expect("invokefunction")  # asked again, and taken: never answered here
        assert head["data"]["new_value"] == 1
        follower = await worker.expect("invokefunction", wait=3)  # goes once no refusal came for the head
        assert follower["data"]["new_value"] == 2
        await worker.close()


async def test_changes_of_one_key_keep_their_order_through_a_busy_condition() -> None:
    # Before, the condition ran outside the line: the later changes' conditions went at once, and their handlers
    # ran before the refused change's.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        worker = await RawWorker.connect(engine.url)
        await _registered(worker, "w::f", "w::guard")
        await worker.send({"type": "registertrigger", "id": "t-state", "trigger_type": "state", "function_id": "w::f",
                           "config": {"scope": "s", "condition_function_id": "w::guard"}})
        await worker.sync()
        await _refused_change(engine, worker, 1)  # its condition refused
        for value in (2, 3):
            await engine.invoke("state::set", {"scope": "s", "key": "k", "value": value})
        seen = []
        while len(seen) < 3:
            request = await worker.serve_one(True)  # conditions pass, handlers answer
            if request["function_id"] == "w::f":
                seen.append(request["data"]["new_value"])
        assert seen == [1, 2, 3]
        await worker.close()
