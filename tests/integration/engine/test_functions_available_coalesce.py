"""``engine::functions-available`` pushes coalesce per subscriber trigger (attack report registry F2/S1).

Each push carries the whole function list (1.1 MB at 2,000 functions). Before, every change of the function set
encoded one for every subscriber, answered or not: a subscriber that stopped answering (or reading) held one per
change (engine RSS 51 -> 398 MB in 40 s with one worker flapping a function every 200 ms). Now a trigger has at most
one push in flight; changes meanwhile only mark it owed, and once it is answered (or fails) the newest list goes
out once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig
from iii_engine.modules.worker.module import PUSHES_PER_WORKER, WorkerModule
from tests.polling import until

from .raw import RawWorker, counters_left

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our functions-available pushes")]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], functions_available_debounce_ms=20)
    async with Engine(config=config) as running:
        yield running


def _ids(push: dict[str, Any]) -> set[str]:
    return {f["function_id"] for f in push["data"]["functions"]}


async def _subscribe(engine: Engine, name: str) -> tuple[RawWorker, dict[str, Any]]:
    """A subscriber and the push its own registration caused (not answered yet)."""
    worker = await RawWorker.connect(engine.url)
    await worker.register(f"{name}::on")
    await worker.send({"type": "registertrigger", "id": name, "trigger_type": "engine::functions-available",
                       "function_id": f"{name}::on", "config": {}})
    return worker, await worker.expect("invokefunction", function_id=f"{name}::on")


async def _answer(worker: RawWorker, push: dict[str, Any], **body: Any) -> None:
    await worker.send({"type": "invocationresult", "invocation_id": push["invocation_id"],
                       "function_id": push["function_id"], **body})


async def _follow(witness: RawWorker, seen: dict[str, Any], function_id: str, listed: bool = True) -> dict[str, Any]:
    """Answer the witness's pushes until one lists ``function_id`` (or, ``listed=False``, does not): the change
    went out."""
    while (function_id in _ids(seen)) != listed:
        seen = await witness.expect("invokefunction")
        await _answer(witness, seen)
    return seen


async def test_an_unanswered_push_holds_later_changes_and_the_newest_list_follows_its_answer(engine: Engine) -> None:
    slow, first = await _subscribe(engine, "slow")
    witness, seen = await _subscribe(engine, "witness")  # answers at once: tells us each change went out
    await _answer(witness, seen)
    other = await RawWorker.connect(engine.url)
    for i in range(5):
        await other.register(f"new::f{i}")
        seen = await _follow(witness, seen, f"new::f{i}")
    # before: one full-list push per change while the first was unanswered
    await slow.nothing_for(0.5)
    await _answer(slow, first)
    newest = await slow.expect("invokefunction")
    assert {f"new::f{i}" for i in range(5)} <= _ids(newest)  # the last change is not missed
    await _answer(slow, newest)
    await slow.nothing_for(0.3)  # once: nothing changed since
    # a push that fails (an error answer) is followed by the newest list too
    await other.register("new::late")
    failed = await slow.expect("invokefunction")
    await other.send({"type": "unregisterfunction", "id": "new::late"})
    seen = await _follow(witness, seen, "new::late")
    seen = await _follow(witness, seen, "new::late", listed=False)
    await _answer(slow, failed, error={"code": "boom", "message": "handler failed"})
    after_failure = await slow.expect("invokefunction")
    assert "new::late" not in _ids(after_failure) and "new::f4" in _ids(after_failure)
    await _answer(slow, after_failure)
    await until(lambda: not counters_left(engine))  # every push's max_fired_calls slot is back
    for worker in (slow, witness, other):
        await worker.close()


async def test_a_push_in_flight_to_a_trigger_unregistered_meanwhile_is_not_sent_again(engine: Engine) -> None:
    gone, first = await _subscribe(engine, "gone")
    witness, seen = await _subscribe(engine, "witness")
    await _answer(witness, seen)
    await gone.send({"type": "unregistertrigger", "id": "gone"})
    other = await RawWorker.connect(engine.url)
    await other.register("new::f")
    await _follow(witness, seen, "new::f")
    await _answer(gone, first)
    await gone.nothing_for(0.3)
    await until(lambda: not counters_left(engine))
    for worker in (gone, witness, other):
        await worker.close()


async def test_a_stop_in_the_turn_a_push_was_made_gives_its_slot_back(engine: Engine) -> None:
    listener, first = await _subscribe(engine, "fa")
    await _answer(listener, first)
    await listener.sync()
    await engine.invoke("engine::workers::list", {})  # nothing pending before the stop below
    module = engine.module("worker")
    assert isinstance(module, WorkerModule)
    module._snapshot = []  # the next check sees a change: one push, made in this turn
    module._fire_functions_available()
    assert engine.fired_calls.in_flight == 1
    await module.stop()  # cancels the push before its first step
    assert engine.fired_calls.in_flight == 0
    await listener.close()


async def test_a_trigger_of_a_function_nobody_serves_is_counted_not_logged_per_change(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    registrant = await RawWorker.connect(engine.url)
    await registrant.send({"type": "registertrigger", "id": "later", "trigger_type": "engine::functions-available",
                           "function_id": "later::on", "config": {}})
    witness, seen = await _subscribe(engine, "witness")
    await _answer(witness, seen)
    missing = engine.invocations.missing_fired
    other = await RawWorker.connect(engine.url)
    for i in range(3):
        await other.register(f"new::f{i}")
        seen = await _follow(witness, seen, f"new::f{i}")
    await until(lambda: engine.invocations.missing_fired == missing + 3, within=2)  # one per change, as any fired call
    # before: an INFO line per change from the push's own call (F8's rate-limited warning is the one report)
    assert not [r for r in caplog.records if "later::on" in r.getMessage() and r.levelno == logging.INFO]
    await registrant.register("later::on")  # a change: the function that appeared gets the list
    push = await registrant.expect("invokefunction", function_id="later::on")
    assert {"later::on", "new::f2"} <= _ids(push)
    await _answer(registrant, push)
    await _follow(witness, seen, "later::on")
    await until(lambda: not counters_left(engine))
    for worker in (registrant, witness, other):
        await worker.close()


def _trigger(name: str, function_id: str) -> dict[str, Any]:
    return {"type": "registertrigger", "id": name, "trigger_type": "engine::functions-available",
            "function_id": function_id, "config": {}}


async def test_pushes_to_one_worker_hold_its_max_fired_calls_per_worker_share_and_the_rest_follow() -> None:
    """Attack fired F-A: before, a worker that never answered, with 8 triggers, held 8 of max_fired_calls 8 (share
    4): busiest_callee 0, skipped_callee_share 0, and every other worker's fired calls were skipped."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], functions_available_debounce_ms=20,
                          max_fired_calls=8, max_fired_calls_per_worker=4)
    async with Engine(config=config) as engine:
        hung = await RawWorker.connect(engine.url)
        for i in range(8):
            await hung.send(_trigger(f"fa{i}", "h::fa"))
        await hung.register("h::fa")  # the change: every trigger is owed the list
        first = [await hung.expect("invokefunction", function_id="h::fa") for _ in range(4)]
        fired = engine.fired_calls
        # every trigger: sent, or owed (PUSHES_PER_WORKER, 4, reaches its share first: not a fired call skipped)
        await until(lambda: fired.in_flight == 4)
        await hung.nothing_for(0.2)
        stats = fired.stats()
        assert (stats["in_flight"], stats["busiest_callee"]) == (4, 4), stats
        for push in first:
            await _answer(hung, push)
        # the 4 skipped are still owed: sent by the next retry (within a second)
        rest = [await hung.expect("invokefunction", function_id="h::fa") for _ in range(4)]
        for push in rest:
            assert "h::fa" in _ids(push)
            await _answer(hung, push)
        await until(lambda: not counters_left(engine))
        await hung.nothing_for(1.3)  # every trigger has the list: no retry sends it again
        await hung.close()


async def test_the_listeners_last_list_is_the_one_the_engine_settled_on() -> None:
    """Attack fired F-B: a push made when an unanswered one ends carried the live registry (with x::f, registered
    and unregistered within one debounce window) while the debounce compared against its snapshot (without): the
    listener kept a list with x::f, the engine had none, until some later change."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], functions_available_debounce_ms=300)
    async with Engine(config=config) as engine:
        slow, first = await _subscribe(engine, "slow")  # the only listener: nobody takes the set at the debounce
        module = engine.module("worker")
        assert isinstance(module, WorkerModule)
        other = await RawWorker.connect(engine.url)
        await other.register("x::g")
        await until(lambda: "x::g" in (module._snapshot or ()))  # slow is owed the set with x::g, unanswered
        await other.register("x::f")
        await other.sync()
        await _answer(slow, first)  # well inside the 300 ms before the debounce takes x::f
        second = await slow.expect("invokefunction")
        await _answer(slow, second)
        await other.send({"type": "unregisterfunction", "id": "x::f"})
        await other.sync()
        await until(lambda: module._check is None)  # the debounce ran: the set is as it was, nothing to tell
        last = second
        while slow.backlog or await _frame_within(slow, 0.3):
            last = await slow.expect("invokefunction")
            await _answer(slow, last)
        listing = await other.result_of("engine::functions::list", {"include_internal": True})
        listed = {f["function_id"] for f in listing["functions"]}
        assert _ids(last) == listed, _ids(last) ^ listed
        for worker in (slow, other):
            await worker.close()


async def _frame_within(worker: RawWorker, seconds: float) -> bool:
    """Whether a frame arrives within ``seconds`` (kept in the backlog)."""
    try:
        worker.backlog.append(await worker.recv(seconds))
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("taker", ["another worker (E12)", "the same worker again"])
async def test_a_trigger_registered_again_is_not_held_by_the_old_registrations_unanswered_push(
        engine: Engine, taker: str) -> None:
    """Attack fired F-C: before, the one push in flight was per trigger id: across 5 changes the worker that took
    over the trigger got 0 pushes while the first registration's push stayed unanswered."""
    hung, _ = await _subscribe(engine, "fa")  # never answered
    new = await RawWorker.connect(engine.url) if taker.startswith("another") else hung
    await new.register("fa::again")
    await new.send(_trigger("fa", "fa::again"))
    await new.sync()
    other = await RawWorker.connect(engine.url)
    await other.register("x::n")
    push = await new.expect("invokefunction", function_id="fa::again")
    assert "x::n" in _ids(push)
    await _answer(new, push)
    for worker in {hung, new, other}:
        await worker.close()


async def test_a_push_that_timed_out_unsent_is_sent_again(caplog: pytest.LogCaptureFixture) -> None:
    """Attack fired F-D: a push that waited for room in a listener's full queue until invocation_timeout_ms ended
    it was never sent again: once the listener read again it had its first list only, without x::new."""
    caplog.set_level(logging.INFO)
    config = EngineConfig(host="127.0.0.1", port=0, modules=[{"class": "modules::pubsub::PubSubModule"}],
                          functions_available_debounce_ms=20, invocation_timeout_ms=500)
    async with Engine(config=config) as engine:
        listener, first = await _subscribe(engine, "s")
        await _answer(listener, first)
        await listener.register("s::sub")
        await listener.send({"type": "registertrigger", "id": "sub", "trigger_type": "subscribe",
                             "function_id": "s::sub", "config": {"topic": "t"}})
        await _answer(listener, await listener.expect("invokefunction", function_id="s::on"))  # s::sub's change
        await listener.sync()
        listener.ws.transport.pause_reading()
        publisher = await RawWorker.connect(engine.url)
        for _ in range(200):  # deliveries fill the listener's queue: its next push waits for room
            await publisher.send({"type": "invokefunction", "function_id": "publish",
                                  "data": {"topic": "t", "data": "x" * 100_000}, "action": {"type": "void"}})
        await until(engine.workers[listener.worker_id].outbox.must_wait)
        other = await RawWorker.connect(engine.url)
        await other.register("x::new")
        await until(lambda: "functions-available call of s::on failed: invocation_timeout" in caplog.text)
        listener.ws.transport.resume_reading()
        push = await listener.expect("invokefunction", wait=10, function_id="s::on")
        assert "x::new" in _ids(push)
        await _answer(listener, push)
        for worker in (listener, publisher, other):
            await worker.close()


async def test_pushes_to_a_worker_that_never_answers_are_a_few_at_a_time_and_others_are_still_told() -> None:
    """Attack C F1: one worker with 3,000 functions and 3,000 subscriber triggers that never answered took the
    engine to 4.8 GB of RSS (each push waiting for room in its queue held a frame of the whole list) and its loop for
    tens of seconds (each push encoded the list again; another worker's connect timed out). A worker now has at most
    PUSHES_PER_WORKER in flight, and the list is encoded once per change. Not counted against max_fired_bytes: there,
    five such workers took all of it, and a healthy listener was told nothing and a 1 MB publish failed."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], functions_available_debounce_ms=20)
    async with Engine(config=config) as engine:
        hogs = [await RawWorker.connect(engine.url) for _ in range(5)]
        for h, hog in enumerate(hogs):
            for i in range(40):
                await hog.send(_trigger(f"fa{h}-{i}", f"h{h}::fa"))
            await hog.register(f"h{h}::fa")
        for i in range(99):
            await hogs[0].register(f"h::f{i}", description="d" * 5000)  # a list of about 500 KB
        fired = engine.fired_calls
        await until(lambda: fired.in_flight == 5 * PUSHES_PER_WORKER)
        pushes = [[await hog.expect("invokefunction", function_id=f"h{h}::fa") for _ in range(PUSHES_PER_WORKER)]
                  for h, hog in enumerate(hogs)]
        await hogs[0].nothing_for(0.3)  # before: 40 each, each holding a frame of the list until sent
        assert fired.in_flight == 5 * PUSHES_PER_WORKER
        assert fired.stats()["bytes_in_flight"] == 0
        listener, first = await _subscribe(engine, "healthy")  # still told at once
        assert {f"h::f{i}" for i in range(99)} <= _ids(first)
        await _answer(listener, first)
        for push in pushes[1][:2]:
            await _answer(hogs[1], push)
        # the owed ones follow within a second, a few at a time again
        again = [await hogs[1].expect("invokefunction", function_id="h1::fa") for _ in range(2)]
        assert all(len(_ids(push)) >= 100 for push in again)
        assert fired.in_flight == 5 * PUSHES_PER_WORKER
        for hog in hogs:
            await hog.close()
        await listener.close()
