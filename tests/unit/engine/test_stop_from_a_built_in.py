"""A built-in function (a handler running inside the engine) that calls ``await engine.stop()`` stops the engine fully.

Before: the stop cancels the calls in flight, the one running it too, so the stop was cancelled half-way by its own
close of the calls: the stop never ended (``serve_forever`` waited for good; the rest of the stop, e.g. the relay's
channels and the counters, was left for a later call to finish).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import BuiltinFunction, InvocationContext
from iii_engine.modules.state.module import StateModule
from tests.integration.engine.test_startup_trust import refused

pytestmark = pytest.mark.timeout(30)


async def test_a_built_in_that_stops_the_engine_stops_it_fully(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::state::StateModule")]))
    serving = asyncio.create_task(engine.serve_forever())
    await asyncio.wait_for(engine.ready.wait(), 5)
    port = engine.port
    state = engine.module("state")
    assert isinstance(state, StateModule) and state.store is not None
    real_close, store_closed = state.store.aclose, asyncio.Event()

    async def tracked_close() -> None:
        await real_close()
        store_closed.set()

    monkeypatch.setattr(state.store, "aclose", tracked_close)
    stop_ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def halt(data: Any, ctx: InvocationContext) -> Any:
        try:
            await engine.stop()
        except BaseException as exc:
            stop_ended.set_result(exc)  # its call is cancelled with the others: nobody can be answered now
            raise
        stop_ended.set_result(None)
        return True

    engine.register_function(BuiltinFunction("test::halt", halt, "stops the engine"))
    caplog.set_level(logging.WARNING, logger="iii_engine")
    async with websockets.connect(engine.url, compression=None) as worker:
        assert loads(await worker.recv())["type"] == "workerregistered"
        await worker.send(dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                                 "function_id": "test::halt", "data": {}}))
        # its call is cancelled with the others (nobody can be answered now), the stop is not
        assert isinstance(await asyncio.wait_for(stop_ended, 10), asyncio.CancelledError)
        # before: waited for good, the stop cancelled half-way by its own cancel of the calls in flight
        await asyncio.wait_for(serving, 5)
    assert store_closed.is_set()
    assert "did not end within" not in caplog.text  # nothing was let go
    assert refused(port)
    assert not engine.ready.is_set() and not engine.has_function("state::get")
    await asyncio.wait_for(engine.start(), 10)  # and it starts again
    try:
        assert not refused(engine.port)
    finally:
        await asyncio.wait_for(engine.stop(), 10)
