"""A worker's void call whose callee's connection closed before the call's frame was written to it did not run, and
nobody hears of it (no caller waits): it is counted (``Invocations.unsent_void_calls``) and logged. Before, 56 to 96 of
2,000 void calls to a callee reconnecting 40 times ended without a word."""

from __future__ import annotations

import logging
import uuid

import pytest
from polling import until

from iii_engine import Engine

from .raw import RawWorker, disconnect

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the engine's void-call accounting")]


async def test_void_calls_a_closing_callee_never_got_are_counted_and_logged(engine: Engine,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine.invocations")
    callee = await RawWorker.connect(engine.url)
    await callee.register("unsent::f")
    await callee.sync()
    caller = await RawWorker.connect(engine.url)
    try:
        # The callee's connection is closing and its disconnect not handled yet (a worker that just left): the
        # function is still listed, and a call routed now cannot be written to it.
        await engine.workers[callee.worker_id].outbox.close(flush=False)
        for n in range(3):
            await caller.send({"type": "invokefunction", "function_id": "unsent::f", "data": {"n": n},
                               "action": {"type": "void"}})
        await until(lambda: engine.invocations.unsent_void_calls == 3)
        assert "void call(s) not sent since the last warning" in caplog.text
        assert "unsent::f" in caplog.text
        # an answered call in the same place is told, never counted here
        answered = str(uuid.uuid4())
        await caller.send({"type": "invokefunction", "invocation_id": answered, "function_id": "unsent::f",
                           "data": {}})
        answer = await caller.expect("invocationresult", invocation_id=answered)
        assert "did not run" in answer["error"]["message"]
        assert engine.invocations.unsent_void_calls == 3
    finally:
        await caller.close()
        await disconnect(engine, callee)
