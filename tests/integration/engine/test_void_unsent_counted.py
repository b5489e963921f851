"""A worker's void call whose callee's connection closed before the call's frame was written to it did not run, and
nobody hears of it (no caller waits). It is routed again: to the worker that serves the function next (the callee
back after a reconnect, or the registration the leaving one had overwritten), held meanwhile as a void call of a
function nobody serves yet is (``void_grace_ms``). Only when nothing can take it (no grace) is it dropped, counted
(``Invocations.unsent_void_calls``) and logged. Before, 56 to 96 of 2,000 void calls to a callee reconnecting 40 times
ended without a word; then they were counted and logged, still lost."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from polling import until

from iii_engine import Engine, EngineConfig

from .raw import RawWorker, disconnect

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the engine's void-call accounting")]


def _void(n: int) -> dict[str, object]:
    return {"type": "invokefunction", "function_id": "unsent::f", "data": {"n": n}, "action": {"type": "void"}}


async def _closing(engine: Engine, callee: RawWorker) -> None:
    """The callee's connection is closing and its disconnect not handled yet (a worker that just left): the function
    is still listed, and a call routed now cannot be written to it."""
    await engine.workers[callee.worker_id].outbox.close(flush=False)


async def _received(worker: RawWorker, count: int) -> list[object]:
    return [(await worker.expect("invokefunction", function_id="unsent::f"))["data"]["n"] for _ in range(count)]


async def test_void_calls_a_closing_callee_never_got_run_on_its_next_worker_in_order(engine: Engine) -> None:
    callee = await RawWorker.connect(engine.url)
    await callee.register("unsent::f")
    await callee.sync()
    caller = await RawWorker.connect(engine.url)
    back: RawWorker | None = None
    try:
        await _closing(engine, callee)
        for n in range(3):
            await caller.send(_void(n))
        await caller.sync()
        await until(lambda: len(engine.invocations.held_voids) == 3)
        await disconnect(engine, callee)
        back = await RawWorker.connect(engine.url)  # the callee's worker, reconnected
        await back.register("unsent::f")
        assert await _received(back, 3) == [0, 1, 2]
        assert engine.invocations.unsent_void_calls == 0
        # an answered call in the same place is told, never routed again
        await _closing(engine, back)
        answered = str(uuid.uuid4())
        await caller.send({"type": "invokefunction", "invocation_id": answered, "function_id": "unsent::f",
                           "data": {}})
        answer = await caller.expect("invocationresult", invocation_id=answered)
        assert "did not run" in answer["error"]["message"]
    finally:
        for worker in (caller, callee, back):
            if worker is not None:
                await worker.close()


async def test_the_registration_a_leaving_callee_overwrote_gets_its_unsent_void_calls(engine: Engine) -> None:
    first = await RawWorker.connect(engine.url)
    await first.register("unsent::f")
    await first.sync()
    second = await RawWorker.connect(engine.url)
    await second.register("unsent::f")  # overwrites: the first is restored when the second leaves
    await second.sync()
    caller = await RawWorker.connect(engine.url)
    try:
        await _closing(engine, second)
        for n in range(4):
            await caller.send(_void(n))
        await caller.sync()
        await disconnect(engine, second)
        assert await _received(first, 4) == [0, 1, 2, 3]
        assert engine.invocations.unsent_void_calls == 0
    finally:
        for worker in (caller, second, first):
            await worker.close()


@pytest.fixture
async def no_grace() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], void_grace_ms=0)) as running:
        yield running


async def test_with_no_grace_they_are_counted_and_logged(no_grace: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine.invocations")
    callee = await RawWorker.connect(no_grace.url)
    await callee.register("unsent::f")
    await callee.sync()
    caller = await RawWorker.connect(no_grace.url)
    try:
        await _closing(no_grace, callee)
        for n in range(3):
            await caller.send(_void(n))
        await until(lambda: no_grace.invocations.unsent_void_calls == 3)
        assert "void call(s) not sent since the last warning" in caplog.text
        assert "unsent::f" in caplog.text
    finally:
        await caller.close()
        await disconnect(no_grace, callee)
