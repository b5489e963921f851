"""What a failed call's message says about whether it ran (attack report on reconnects, F2 and F3).

F2: a call whose frame was written to a connection that then dropped failed with ``ConnectionLostError`` and a
docstring saying "the engine has halted it"; a stalled engine resumed and ran 7 of 11 such calls. The message now
says the call may have run. F3: a call that timed out while still in the outbound queue (never sent) read like one
that may have run; its ``TimeoutError`` now says it was never sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from iii.errors import ConnectionLostError
from tests.stall_relay import Relay

from .conftest import MakeWorkerAt, RealEngineThread, wait_until


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def test_a_call_sent_before_the_connection_dropped_says_it_may_have_run(
        real: RealEngineThread, relay: Relay, workers: MakeWorkerAt, pool: ThreadPoolExecutor) -> None:
    started, release = threading.Event(), threading.Event()

    def debit(data: Any) -> Any:
        started.set()
        release.wait(5)
        return {"ok": True}

    callee = workers(real.url, "callee")
    callee.register_function("bank::debit", debit)
    real.wait_registered("bank::debit")
    caller = workers(relay.url, "caller")
    call: Future[Any] = pool.submit(caller.trigger, {"function_id": "bank::debit", "payload": {"n": 1}})
    try:
        assert started.wait(5)  # the engine read the call and the callee runs it

        async def cut() -> None:
            relay.cut()

        real.run(cut())
        with pytest.raises(ConnectionLostError) as info:
            call.result(10)
    finally:
        release.set()
    assert info.value.code == "connection_lost"  # (unchanged: code matching on it still works)
    # before: "Connection to the engine was lost while invoking 'bank::debit'", and the docstring said the engine
    # had halted the call
    assert info.value.message == ("Connection to the engine was lost while invoking 'bank::debit', after the call was "
                                  "sent: it may have run (retry only if running it twice is safe)")
    assert "may have run" in (ConnectionLostError.__doc__ or "")


def test_a_call_timed_out_in_the_outbound_queue_says_it_was_never_sent(
        real: RealEngineThread, workers: MakeWorkerAt) -> None:
    ran: list[Any] = []
    callee = workers(real.url, "callee")
    callee.register_function("bank::debit", ran.append)
    caller = workers(real.url, "caller")
    real.wait_registered("bank::debit")
    real.stop()
    wait_until(lambda: caller.get_connection_state() != "connected")  # from now on calls wait in the queue
    with pytest.raises(TimeoutError) as info:
        caller.trigger({"function_id": "bank::debit", "payload": {"n": 1}, "timeout_ms": 100})
    # before: "Invocation of 'bank::debit' timed out after 100ms", as for a call that may have run
    assert str(info.value) == ("Invocation of 'bank::debit' timed out after 100ms; it was never sent (still in the "
                               "outbound queue, waiting for the engine), so it did not run: trying again is safe")
    real.start()
    real.wait_registered("bank::debit")
    assert caller.trigger({"function_id": "bank::debit", "payload": {"n": 2}}) is None
    assert [data["n"] for data in ran] == [2]  # the timed-out one never went out


def test_a_sent_call_that_timed_out_keeps_the_plain_message(real: RealEngineThread, workers: MakeWorkerAt) -> None:
    release = threading.Event()
    callee = workers(real.url, "callee")
    callee.register_function("slow::wait", lambda data: release.wait(5))
    caller = workers(real.url, "caller")
    real.wait_registered("slow::wait")
    try:
        with pytest.raises(TimeoutError, match=r"^Invocation of 'slow::wait' timed out after 100ms$"):
            caller.trigger({"function_id": "slow::wait", "payload": {}, "timeout_ms": 100})
    finally:
        release.set()
