"""max_calls_per_worker (iii_engine.limits.WorkerCalls): the calls one worker has in flight, bounded in count.

Before the bound a worker's ``invokefunction`` frames were bounded in bytes only: every built-in call and enqueue
action was a task, every call of a worker function a pending-table entry (void ones too), with no bound on how many
one worker had at once; a callee that reads but never answers let one caller grow the engine without end. Each test
here fails on an engine without the bound (or, for the leak tests, with a count that is not given back).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec, limits
from iii_engine.config import ConfigError
from iii_engine.modules.base import BuiltinFunction, InvocationContext
from tests.polling import until

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our max_calls_per_worker bound")]

LIMIT = 3
HELD_UNTIL = ("a call counts until its callee answers it or a side disconnects, not when its caller stops waiting "
              "(set invocation_timeout_ms to end calls a callee never answers)")


def _engine(limit: int = LIMIT, **config: Any) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], max_calls_per_worker=limit, **config))


@pytest.fixture
async def bounded() -> AsyncIterator[Engine]:
    async with _engine() as running:
        yield running


class Gate:
    """A built-in (or enqueue target) that holds every call until :meth:`open`."""

    def __init__(self) -> None:
        self.started = 0
        self.event = asyncio.Event()

    async def __call__(self, *args: Any) -> Any:
        self.started += 1
        await self.event.wait()
        return {"ok": True}

    def open(self) -> None:
        self.event.set()


def _slow_builtin(engine: Engine, gate: Gate, function_id: str = "test::slow") -> None:
    async def handler(data: Any, ctx: InvocationContext) -> Any:
        return await gate(data)

    engine.register_function(BuiltinFunction(function_id, handler))


def _invoke(function_id: str, *, answered: bool = True, action: dict[str, Any] | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "invokefunction", "function_id": function_id, "data": {}}
    if answered:
        frame["invocation_id"] = str(uuid.uuid4())
    if action is not None:
        frame["action"] = action
    return frame



async def _fill(engine: Engine, caller: RawWorker, callee: RawWorker) -> list[dict[str, Any]]:
    """``LIMIT`` answered calls from ``caller`` to ``callee``'s ``slow::never``, delivered and not answered."""
    frames = [_invoke("slow::never") for _ in range(LIMIT)]
    for frame in frames:
        await caller.send(frame)
    for frame in frames:
        await callee.expect("invokefunction", invocation_id=frame["invocation_id"])
    assert engine.workers[caller.worker_id].calls == LIMIT
    return frames


async def test_an_answered_call_past_the_bound_is_refused_with_too_many_calls(bounded: Engine) -> None:
    callee = await RawWorker.connect(bounded.url)
    await callee.register("slow::never")
    await callee.sync()
    caller = await RawWorker.connect(bounded.url)
    frames = await _fill(bounded, caller, callee)
    refused = await caller.call("slow::never")
    assert refused["error"] == {
        "code": "too_many_calls",
        "message": f"worker {caller.worker_id} has {LIMIT} calls of worker functions in flight (max_calls_per_worker "
                   f"{LIMIT}), {LIMIT} of them to slow::never: {HELD_UNTIL}"}
    assert bounded.worker_calls.refused == 1
    assert len(bounded.invocations.pending) == LIMIT  # the refused one never reached the table
    # one answer makes room for one more call
    await callee.send({"type": "invocationresult", "invocation_id": frames[0]["invocation_id"],
                       "function_id": "slow::never", "result": 1})
    assert (await caller.expect("invocationresult", invocation_id=frames[0]["invocation_id"]))["result"] == 1
    again = _invoke("slow::never")
    await caller.send(again)
    await callee.expect("invokefunction", invocation_id=again["invocation_id"])
    assert bounded.workers[caller.worker_id].calls == LIMIT


async def test_a_worker_at_the_bound_still_registers_and_answers_and_others_still_call(bounded: Engine) -> None:
    callee = await RawWorker.connect(bounded.url)
    await callee.register("slow::never")
    await callee.sync()
    caller = await RawWorker.connect(bounded.url)
    await _fill(bounded, caller, callee)
    # its registrations are handled ...
    await caller.register("caller::echo")
    await caller.sync()
    assert "caller::echo" in bounded.registry.functions
    # ... and so are the results it sends as a callee
    other = await RawWorker.connect(bounded.url)
    asked = _invoke("caller::echo")
    await other.send(asked)
    await caller.serve_one({"echoed": True}, invocation_id=asked["invocation_id"])
    assert (await other.expect("invocationresult", invocation_id=asked["invocation_id"]))["result"] == {
        "echoed": True}
    # another worker's calls are not limited by the first one's count
    for _ in range(LIMIT):
        frame = _invoke("slow::never")
        await other.send(frame)
        await callee.expect("invokefunction", invocation_id=frame["invocation_id"])
    assert (bounded.workers[other.worker_id].calls, bounded.workers[caller.worker_id].calls) == (LIMIT, LIMIT)


async def test_a_void_call_past_the_bound_is_dropped_counted_and_logged(bounded: Engine,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    callee = await RawWorker.connect(bounded.url)
    await callee.register("slow::never")
    await callee.sync()
    caller = await RawWorker.connect(bounded.url)
    for _ in range(LIMIT):  # void calls hold the count too, until their callee answers
        await caller.send(_invoke("slow::never", answered=False, action={"type": "void"}))
        await callee.expect("invokefunction")
    assert bounded.workers[caller.worker_id].calls == LIMIT
    with caplog.at_level(logging.WARNING, logger="iii_engine.limits"):
        await caller.send(_invoke("slow::never", answered=False, action={"type": "void"}))
        await caller.send(_invoke("slow::never", action={"type": "void"}))  # an id, but no reply asked for
        await caller.sync()
    await caller.nothing_for(0.05)  # no reply to a void call, not even a refusal
    assert (bounded.worker_calls.refused_void, bounded.worker_calls.refused) == (2, 0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "iii_engine.limits"]
    assert len(warnings) == 1  # rate-limited: the first, then at most one per interval
    assert warnings[0].startswith(f"worker calls refused over max_calls_per_worker {LIMIT} or "
                                  f"max_call_bytes_per_worker {64 * 1024 * 1024}: 0 answered with too_many_calls, "
                                  "1 void")
    assert warnings[0].endswith(f"latest: void call of slow::never: worker {caller.worker_id} has {LIMIT} calls of "
                                f"worker functions in flight (max_calls_per_worker {LIMIT}), {LIMIT} of them to "
                                f"slow::never: {HELD_UNTIL}")
    # the callee never sees them
    await callee.nothing_for(0.05)
    # a void call's count goes when its callee answers
    await callee.send({"type": "invocationresult", "invocation_id": next(iter(bounded.invocations.pending)),
                       "function_id": "slow::never", "result": None})
    await callee.sync()
    assert bounded.workers[caller.worker_id].calls == LIMIT - 1


async def test_built_in_calls_and_enqueue_actions_count_too(bounded: Engine) -> None:
    gate = Gate()
    _slow_builtin(bounded, gate)

    class Queues:
        async def enqueue(self, queue_name: str, function_id: str, data: Any) -> str:
            await gate()
            return "receipt"

    bounded.serve_named_queues(Queues())
    caller = await RawWorker.connect(bounded.url)
    builtin_calls = [_invoke("test::slow"), _invoke("test::slow", answered=False, action={"type": "void"})]
    enqueued = _invoke("test::slow", action={"type": "enqueue", "queue": "jobs"})
    for frame in (*builtin_calls, enqueued):
        await caller.send(frame)
    await until(lambda: gate.started == LIMIT)
    assert bounded.workers[caller.worker_id].calls == LIMIT
    refused = [_invoke("test::slow"), _invoke("test::slow", action={"type": "enqueue", "queue": "jobs"}),
               _invoke("test::slow", answered=False, action={"type": "enqueue", "queue": "jobs"})]
    for frame in refused:
        await caller.send(frame)
    for frame in refused[:2]:
        answer = await caller.expect("invocationresult", invocation_id=frame["invocation_id"])
        assert answer["error"]["code"] == "too_many_calls"
    await caller.sync()
    assert (bounded.worker_calls.refused, bounded.worker_calls.refused_void, gate.started) == (2, 1, LIMIT)
    gate.open()
    assert (await caller.expect("invocationresult", invocation_id=builtin_calls[0]["invocation_id"]))["result"] == {
        "ok": True}
    assert (await caller.expect("invocationresult", invocation_id=enqueued["invocation_id"]))["result"] == {
        "messageReceiptId": "receipt"}
    await until(lambda: bounded.workers[caller.worker_id].calls == 0)
    assert not bounded.invocations._tasks


async def _ends_each_way(callee: RawWorker, caller: RawWorker, rounds: int) -> None:
    """``rounds`` times: calls of the callee answered, answered with an error and void-answered, and a built-in
    call; all over before it returns."""
    for _ in range(rounds):
        frames = [_invoke("slow::never"), _invoke("slow::never"),
                  _invoke("slow::never", answered=False, action={"type": "void"})]
        for frame in frames:
            await caller.send(frame)
        requests = [await callee.expect("invokefunction") for _ in frames]
        for request, reply in zip(requests, ({"result": 1}, {"error": {"code": "boom", "message": "no"}}, {}),
                                  strict=True):
            await callee.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                               "function_id": "slow::never", **reply})
        for frame in frames[:2]:
            await caller.expect("invocationresult", invocation_id=frame["invocation_id"])
        assert (await caller.call("engine::functions::list", {})).get("error") is None
    await callee.sync()


async def test_the_count_is_back_to_zero_after_calls_end_every_way() -> None:
    """Answered, error, void answered, built-in, callee disconnect, caller disconnect, engine stop."""
    async with _engine(limit=50) as engine:
        callee = await RawWorker.connect(engine.url)
        await callee.register("slow::never")
        await callee.sync()
        caller = await RawWorker.connect(engine.url)
        connection = engine.workers[caller.worker_id]
        await _ends_each_way(callee, caller, 20)
        assert connection.calls == 0
        # callee disconnect (halt_worker): answered and void calls it held are stopped
        for frame in (_invoke("slow::never"), _invoke("slow::never", answered=False, action={"type": "void"})):
            await caller.send(frame)
            await callee.expect("invokefunction")
        assert connection.calls == 2
        await _gone(engine, callee)
        assert connection.calls == 0
        # caller disconnect: every call it made is stopped, void ones too (else leaving and coming back would pile up
        # void calls a silent callee never ends, each new connection's count starting at 0)
        callee = await RawWorker.connect(engine.url)
        await callee.register("slow::never")
        await callee.sync()
        for frame in (_invoke("slow::never"), _invoke("slow::never"),
                      _invoke("slow::never", answered=False, action={"type": "void"})):
            await caller.send(frame)
            await callee.expect("invokefunction")
        assert connection.calls == 3
        void = next(p.invocation_id for p in engine.invocations.pending.values() if p.caller is None)
        await _gone(engine, caller)
        assert connection.calls == 0 and not engine.invocations.pending
        # the callee's late answer to the stopped void call finds nothing and changes nothing
        await callee.send({"type": "invocationresult", "invocation_id": void, "function_id": "slow::never"})
        await callee.sync()
        assert connection.calls == 0 and not engine.invocations.pending
        # engine stop: calls pending and built-in calls running
        gate = Gate()
        _slow_builtin(engine, gate)
        last = await RawWorker.connect(engine.url)
        connection = engine.workers[last.worker_id]
        for frame in (_invoke("slow::never"), _invoke("slow::never", answered=False, action={"type": "void"})):
            await last.send(frame)
            await callee.expect("invokefunction")
        await last.send(_invoke("test::slow"))
        await until(lambda: gate.started == 1)
        assert connection.calls == 3
    assert connection.calls == 0
    assert not engine.invocations.pending and not engine.invocations._tasks


async def test_the_count_is_back_to_zero_after_calls_time_out() -> None:
    async with _engine(limit=LIMIT, invocation_timeout_ms=50) as engine:
        callee = await RawWorker.connect(engine.url)
        await callee.register("slow::never")
        await callee.sync()
        caller = await RawWorker.connect(engine.url)
        connection = engine.workers[caller.worker_id]
        for _ in range(4):  # more calls in all than the bound: each timeout (_expire) gave its count back
            timed = _invoke("slow::never")
            await caller.send(timed)
            await caller.send(_invoke("slow::never", answered=False, action={"type": "void"}))
            answer = await caller.expect("invocationresult", invocation_id=timed["invocation_id"])
            assert answer["error"]["code"] == "invocation_timeout"
            await until(lambda: not engine.invocations.pending)
            assert connection.calls == 0
        assert engine.worker_calls.refused == engine.worker_calls.refused_void == 0


async def test_built_in_calls_cancelled_by_engine_stop_before_they_ran_give_their_count_back() -> None:
    engine = _engine()
    await engine.start()
    try:
        gate = Gate()
        _slow_builtin(engine, gate)
        caller = await RawWorker.connect(engine.url)
        connection = engine.workers[caller.worker_id]
        # started straight on the engine's dispatch, as the connection's reader does, and stopped before any of
        # the tasks ran
        invocations = engine.invocations
        for frame in (_invoke("test::slow"), _invoke("test::slow", action={"type": "enqueue", "queue": "q"})):
            assert invocations.start_invoke(connection, frame) is None
        assert connection.calls == 2
        await invocations.close()
        assert gate.started == 0
        assert connection.calls == 0 and not invocations._tasks
    finally:
        await engine.stop()


async def test_fired_calls_cancelled_by_engine_stop_before_they_ran_give_their_slot_back() -> None:
    """FiredCalls: a fired call's task cancelled before it ever ran kept its max_fired_calls slot, past a stop
    and a start of the same engine: with max_fired_calls 1 the restarted engine fired nothing."""
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], max_fired_calls=1))
    await engine.start()
    try:
        assert engine.fire("nobody::there", {}) is True
        await engine.invocations.close()  # as engine.stop() does, here before the fired call's task ever ran
        assert engine.fired_calls.in_flight == 0
        await engine.stop()
        await engine.start()
        assert engine.fired_calls.try_take()  # its one slot is free
    finally:
        await engine.stop()


@pytest.mark.parametrize("value", [0, -1])
def test_max_calls_per_worker_must_be_at_least_one(value: int) -> None:
    with pytest.raises(ConfigError, match=f"max_calls_per_worker: must be >= 1, got {value}"):
        EngineConfig(max_calls_per_worker=value)
    assert EngineConfig().max_calls_per_worker == 10_000



async def test_health_reports_the_bounds_degraded_while_they_lose_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, ``engine::health::check`` said ``fired_calls: healthy`` while calls were being skipped, and knew
    nothing of the calls refused to a worker."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::observability::OtelModule")],
                          max_fired_calls=1, max_calls_per_worker=1)
    async with Engine(config=config) as engine:
        callee = await RawWorker.connect(engine.url)
        await callee.register("slow::never")
        await callee.sync()
        watcher = await RawWorker.connect(engine.url)
        health = await watcher.result_of("engine::health::check", {})
        assert health["status"] == "healthy"
        assert health["components"]["fired_calls"]["status"] == "healthy"
        assert health["components"]["worker_calls"] == {"status": "healthy", "details": {
            "max_calls_per_worker": 1, "in_flight": 1, "busiest_worker": 1, "refused": 0, "refused_void": 0,
            # the health check's own call holds its frame's bytes
            "max_call_bytes_per_worker": 64 * 1024 * 1024, "bytes_in_flight": ANY, "busiest_worker_bytes": ANY}}
        # a fired call skipped for want of room
        assert engine.fired_calls.try_take()
        assert engine.fire("nobody::there", {}) is False
        health = await watcher.result_of("engine::health::check", {})
        # the component says so; the engine itself is healthy (a probe must not restart it for shedding load)
        assert (health["status"], health["components"]["fired_calls"]["status"]) == ("healthy", "degraded")
        assert health["components"]["fired_calls"]["details"]["skipped"] == 1
        assert health["components"]["worker_calls"]["status"] == "healthy"
        engine.fired_calls.release()
        # a worker's call refused at max_calls_per_worker
        caller = await RawWorker.connect(engine.url)
        await caller.send(_invoke("slow::never"))
        await callee.expect("invokefunction")
        assert (await caller.call("slow::never"))["error"]["code"] == "too_many_calls"
        health = await watcher.result_of("engine::health::check", {})
        assert health["components"]["worker_calls"] == {"status": "degraded", "details": {
            "max_calls_per_worker": 1, "in_flight": 2, "busiest_worker": 1, "refused": 1, "refused_void": 0,
            # the health check's own call holds its frame's bytes
            "max_call_bytes_per_worker": 64 * 1024 * 1024, "bytes_in_flight": ANY, "busiest_worker_bytes": ANY}}
        metrics = await watcher.result_of("engine::metrics::list", {})
        assert metrics["engine_metrics"]["worker_calls"]["refused"] == 1
        assert metrics["engine_metrics"]["fired_calls"]["skipped"] == 1
        # healthy again once the losses are older than the window
        monkeypatch.setattr(limits, "DEGRADED_WINDOW_S", 0.0)
        health = await watcher.result_of("engine::health::check", {})
        assert health["status"] == "healthy"
        assert {name: c["status"] for name, c in health["components"].items()
                if name in ("fired_calls", "worker_calls")} == {"fired_calls": "healthy", "worker_calls": "healthy"}


async def test_a_caller_coming_back_cannot_pile_up_void_calls_a_silent_callee_never_ends() -> None:
    """Before, a caller's void calls outlived its connection: at the bound, leaving and connecting again let it add
    another ``max_calls_per_worker`` to the pending table each time (it grew without end)."""
    async with _engine(limit=5) as engine:
        callee = await RawWorker.connect(engine.url)
        await callee.register("slow::never")
        await callee.sync()
        for _ in range(4):
            caller = await RawWorker.connect(engine.url)
            for _ in range(5):
                await caller.send(_invoke("slow::never", answered=False, action={"type": "void"}))
                await callee.expect("invokefunction")
            assert len(engine.invocations.pending) == 5
            await _gone(engine, caller)
            assert not engine.invocations.pending
        assert engine.workers[callee.worker_id].in_flight == set()
