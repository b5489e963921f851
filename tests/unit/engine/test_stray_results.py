"""Calls that end without their answer: results that end no call are logged rate-limited (not once per frame),
and an engine call whose caller was cancelled leaves the pending table."""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii_engine.invocations import Invocations
from iii_engine.registry import FunctionEntry, Registry
from iii_engine.workers import WorkerConnection


class _Sender:
    """Just what ``handle_result`` reads of a worker connection for a result that matches nothing."""

    id = "w1"

    def __init__(self) -> None:
        self.in_flight: set[str] = set()


async def test_a_flood_of_results_that_end_no_call_logs_once_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    invocations = Invocations(Registry(), {})
    sender: WorkerConnection = _Sender()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
        for n in range(1000):
            invocations.handle_result(sender, {"invocation_id": f"id-{n}", "function_id": "f"})
    assert invocations.stray_results == 1000
    warnings = [r for r in caplog.records if r.name == "iii_engine.invocations"]
    assert len(warnings) == 1 and "id-0" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
        await invocations.close()  # the burst's count is written when the engine stops
    [summary] = [r.getMessage() for r in caplog.records if r.name == "iii_engine.invocations"]
    assert "999 invocation result(s) ended no call" in summary and "1000 in all" in summary


async def test_an_engine_call_whose_caller_is_cancelled_leaves_the_pending_table() -> None:
    """Before, only a timeout took the call out: a cancelled caller's call stayed pending until the worker answered
    (never, for a silent one) or the engine stopped."""
    sent = asyncio.Event()

    class _Outbox:
        waiting = 0
        closed = False

        @staticmethod
        def must_wait(size: int = 0) -> bool:
            return False

        async def wait_for_room(self, size: int, call: object = None) -> None:
            return None

        async def send(self, text: str, size: int, *, flush: bool, tag: object = None) -> bool:
            sent.set()
            return True

    class _Session:
        @staticmethod
        def invoke(*args: object) -> str:
            return "{}"

    class _Callee:
        id = "callee"
        outbox = _Outbox()
        session = _Session()

        def __init__(self) -> None:
            self.in_flight: set[str] = set()

    registry = Registry()
    registry.add_function(FunctionEntry("silent", owner="callee"))
    callee = _Callee()
    invocations = Invocations(registry, {"callee": callee})  # type: ignore[dict-item]
    call = asyncio.get_running_loop().create_task(invocations.call("silent", {}))
    await sent.wait()
    assert len(invocations.pending) == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not invocations.pending and callee.in_flight == set()
