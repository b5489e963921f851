"""A worker runs at most ``InitOptions.max_invocations`` invocations at once: one more is answered ``worker_busy``
at once (a void one dropped), with a rate-limited warning, instead of a task and its payload held for each of an
engine's flood of calls (the reference SDK, and ours before, held every one)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from iii import InitOptions, InvocationError, TriggerAction
from iii.iii import III

from .conftest import EngineThread, Harness, MakeWorker

LIMIT = 3


def test_invocations_past_max_invocations_are_refused_at_once(served: Harness, make_worker: MakeWorker,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii.iii")
    callee, caller = make_worker("callee", max_invocations=LIMIT), make_worker("caller")
    release = threading.Event()
    started = threading.Semaphore(0)
    ran: list[Any] = []

    def stall(data: Any) -> Any:
        ran.append(data)
        started.release()
        assert release.wait(20)
        return data

    callee.register_function("busy::stall", stall)
    served.wait_registered("busy::stall")
    outcomes: list[Any] = [None] * LIMIT

    def call(n: int) -> None:
        outcomes[n] = caller.trigger({"function_id": "busy::stall", "payload": n, "timeout_ms": 20_000})

    threads = [threading.Thread(target=call, args=(n,)) for n in range(LIMIT)]
    for thread in threads:
        thread.start()
    for _ in range(LIMIT):
        assert started.acquire(timeout=10)  # every slot taken
    assert caller.trigger({"function_id": "busy::stall", "payload": "void", "action": TriggerAction.Void()}) is None
    began = time.monotonic()
    with pytest.raises(InvocationError) as info:  # (behind the void call on both sockets: it was refused first)
        caller.trigger({"function_id": "busy::stall", "payload": "one too many", "timeout_ms": 20_000})
    assert time.monotonic() - began < 5  # answered at once, not after a slot came free
    assert info.value.code == "worker_busy"
    assert "'busy::stall' was not run" in info.value.message and "max_invocations" in info.value.message
    release.set()
    for thread in threads:
        thread.join(20)
    assert outcomes == list(range(LIMIT))
    # the slots came back: the next call runs
    assert caller.trigger({"function_id": "busy::stall", "payload": "after", "timeout_ms": 20_000}) == "after"
    assert "one too many" not in ran and "void" not in ran
    warnings = [r.getMessage() for r in caplog.records if "max_invocations=3" in r.getMessage()]
    # the first refusal is told at once (the void call's: engines give every call they route to a worker an id, so
    # it is answered worker_busy as any other, and its caller, who asked for no answer, hears nothing)
    assert warnings and "1 call(s) answered worker_busy" in warnings[0], warnings


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "10"])
def test_max_invocations_must_be_a_whole_number_above_zero(value: Any) -> None:
    with pytest.raises(ValueError, match=r"max_invocations must be a whole number > 0, got "):
        III("ws://127.0.0.1:1", InitOptions(max_invocations=value))


def test_a_call_without_id_past_max_invocations_is_dropped_and_told(fake: EngineThread, make_fake_worker: MakeWorker,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii.iii")
    worker = make_fake_worker("callee", max_invocations=1)
    release, running = threading.Event(), threading.Event()
    ran: list[Any] = []

    def stall(data: Any) -> None:
        ran.append(data)
        running.set()
        assert release.wait(20)

    worker.register_function("busy::note", stall)
    fake.wait_registered("busy::note")
    try:
        fake.send_to(worker, {"type": "invokefunction", "function_id": "busy::note", "data": "first"})
        assert running.wait(10)
        fake.send_to(worker, {"type": "invokefunction", "function_id": "busy::note", "data": "second"})
        worker.list_functions()  # a round trip on the same socket: the second frame was handled
        warnings = [r.getMessage() for r in caplog.records if "max_invocations=1" in r.getMessage()]
        assert warnings and "1 call(s) without an invocation id dropped" in warnings[0], warnings
        assert not [f for f in fake.worker(worker).frames if f["type"] == "invocationresult"]  # nobody to answer
    finally:
        release.set()
    assert ran == ["first"]


def test_refusals_do_not_pile_up_behind_an_engine_that_does_not_read(fake: EngineThread,
                                                                     make_fake_worker: MakeWorker) -> None:
    # Refusals were queued past the outbound queue's bounds (frames of the loop's own), so an engine flooding a
    # busy worker while not reading its socket grew the worker's queue by one answer per call, for as long as the
    # send timeout let the connection live (41 MB in 30 s measured).
    worker = make_fake_worker("callee", max_invocations=1)
    function_id = "busy::" + "x" * 4000  # big answers: the kernel's socket buffers take few of them
    release = threading.Event()
    worker.register_function(function_id, lambda data: release.wait(20))
    fake.wait_registered(function_id)
    engine_side = fake.worker(worker)
    flood = 5_000

    async def stall_then_flood() -> None:
        await fake.engine.send(engine_side, {"type": "invokefunction", "invocation_id": "first",
                                             "function_id": function_id, "data": 0})
        engine_side.ws.transport.pause_reading()  # the engine stops reading the worker
        for n in range(flood):
            await fake.engine.send(engine_side, {"type": "invokefunction", "invocation_id": f"flood-{n}",
                                                 "function_id": function_id, "data": n})

    try:
        fake.run(stall_then_flood())

        def counted() -> int:
            return sum(worker._busy._unlogged.values()) + 1  # (the first refusal is logged at once)

        deadline = time.monotonic() + 20
        while counted() < flood and time.monotonic() < deadline:
            time.sleep(0.01)  # (nothing reports the worker's reads while its engine does not read it)
        assert counted() == flood
        conn = worker._conn
        assert len(conn._backlog) <= conn._max_queue, f"{len(conn._backlog)} frames queued"
        assert worker._busy._unlogged.get("unsent", 0) > 0
    finally:
        release.set()
        fake.run(_resume(engine_side.ws.transport))


async def _resume(transport: Any) -> None:
    transport.resume_reading()


def test_a_busy_worker_still_hears_of_new_functions(served: Harness, make_worker: MakeWorker) -> None:
    # The client's own functions-available function is not refused: a refused push was not sent again, and the
    # callbacks missed the change until the next one.
    callee, other = make_worker("callee", max_invocations=1), make_worker("other")
    release, running, heard = threading.Event(), threading.Event(), threading.Event()

    def stall(data: Any) -> None:
        running.set()
        assert release.wait(20)

    callee.register_function("busy::stall", stall)
    served.wait_registered("busy::stall")
    callee.on_functions_available(
        lambda functions: heard.set() if any(f.function_id == "late::fn" for f in functions) else None)
    try:
        assert other.trigger({"function_id": "busy::stall", "payload": 0, "action": TriggerAction.Void()}) is None
        assert running.wait(10)  # the one slot is taken
        other.register_function("late::fn", lambda data: data)
        assert heard.wait(10), "the busy worker's callback never heard of late::fn"
    finally:
        release.set()


def test_refusals_counted_since_the_last_warning_are_told_at_shutdown(
        fake: EngineThread, make_fake_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii.iii")
    worker = make_fake_worker("callee", max_invocations=1)
    release, running = threading.Event(), threading.Event()

    def stall(data: Any) -> None:
        running.set()
        assert release.wait(20)

    worker.register_function("busy::stall", stall)
    fake.wait_registered("busy::stall")
    try:
        for n in range(4):
            fake.send_to(worker, {"type": "invokefunction", "invocation_id": f"call-{n}", "function_id": "busy::stall",
                                  "data": n})
            if n == 0:
                assert running.wait(10)
        worker.list_functions()  # a round trip on the same socket: all four were handled
        worker.shutdown()
    finally:
        release.set()
    warnings = [r.getMessage() for r in caplog.records if "max_invocations=1" in r.getMessage()]
    # the first at once, the other two in the interval the shutdown cut short
    assert len(warnings) == 2 and "2 call(s) answered worker_busy" in warnings[1], warnings
