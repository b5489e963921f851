"""``Invocations.call(timeout_s=...)`` bounds the whole call, its wait for room in the callee's queue included (R2).

Before, the deadline started only once the invocation frame was queued: against a callee that stopped reading (its
queue full) the call waited for good. The stream module's calls to a custom stream's worker
(``custom_call_timeout_ms``, a composed update holding its item's lock across two of them) rely on that bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import EngineError
from iii_engine.registry import FunctionEntry
from iii_engine.workers import Outbox, WorkerConnection
from tests.polling import until

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as started:
        yield started


async def _stalled_callee(engine: Engine, function_id: str) -> tuple[WorkerConnection, asyncio.Event]:
    """A worker owning ``function_id`` whose socket takes nothing until the event is set, its queue full."""
    unblocked = asyncio.Event()

    async def send(text: str) -> None:
        await unblocked.wait()

    callee = WorkerConnection(outbox=Outbox(send, limit=1))
    engine.workers[callee.id] = callee
    engine.registry.add_function(FunctionEntry(function_id, owner=callee.id))
    callee.post('{"type":"ping"}')  # being written (stalled)
    callee.post('{"type":"ping"}')  # queued: the queue (limit 1) is full
    assert callee.outbox.must_wait(0)
    return callee, unblocked


async def test_the_deadline_covers_the_wait_for_room(engine: Engine) -> None:
    callee, unblocked = await _stalled_callee(engine, "w::slow")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(EngineError) as caught:
        await asyncio.wait_for(engine.invoke("w::slow", {}, timeout_s=0.3), 10)
    assert caught.value.code == "invocation_timeout"
    assert loop.time() - began < 5
    assert not engine.invocations.pending  # the call left the table: never sent
    assert callee.outbox.waiting == 0
    unblocked.set()
    await callee.outbox.close()


async def test_without_a_deadline_the_call_still_waits_then_goes_out(engine: Engine) -> None:
    callee, unblocked = await _stalled_callee(engine, "w::slow")
    call = asyncio.ensure_future(engine.invoke("w::slow", {}))
    await until(lambda: callee.outbox.waiting == 1)
    assert not call.done()
    unblocked.set()
    await until(lambda: callee.outbox.waiting == 0)
    assert not call.done() and len(engine.invocations.pending) == 1  # sent: waiting for the answer now
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not engine.invocations.pending
    await callee.outbox.close()
