"""A stop once begun goes on to its end whatever cancels its caller; the caller's cancel only ends its wait.

Before: only the stop's own cancel of the calls in flight spared it; any other cancel of its caller cancelled the stop
half-way. A REST API route calling a built-in that stops the engine: the REST API module's stop cancelled that call
(``serve_forever`` never returned, the state and worker modules never stopped); the same through a call deadline,
or a plain cancel of a task awaiting ``stop()`` (the rest of the stop was left to a later call).

A call that reaches a stopped module's function during the rest of the engine's stop (here while a module stopped
after it waits) fails with ``engine_stopping``, naming the stop, which a caller may retry once the engine runs again.
Before: ``function_not_found`` ("Function state::get not found"), which looks permanent.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httpx
import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine import engine as engine_module
from iii_engine.modules.base import BuiltinFunction, EngineError, EngineModule, InvocationContext
from iii_engine.modules.catalogue import resolve
from tests.integration.engine.raw import RawWorker
from tests.integration.engine.test_startup_trust import refused
from tests.integration.modules.test_http_api import add_route

pytestmark = pytest.mark.timeout(30)

_HELD = "modules::held::HeldStopModule"


class _HeldStop(EngineModule):
    """Its stop waits for ``go`` (set by the test); records whether that stop ended or was cancelled."""

    name: ClassVar[str] = "held"
    class_names: ClassVar[tuple[str, ...]] = (_HELD,)
    go: ClassVar[asyncio.Event]
    entered: ClassVar[asyncio.Event]
    stops: ClassVar[list[str]]

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Wait for the test's go."""
        type(self).entered.set()
        try:
            await asyncio.wait_for(type(self).go.wait(), 10)
        except asyncio.CancelledError:
            type(self).stops.append("cancelled")
            raise
        type(self).stops.append("ended")


def _resolve(name: str) -> type[EngineModule]:
    return _HeldStop if name == _HELD else resolve(name)


@pytest.fixture(autouse=True)
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "resolve", _resolve)
    _HeldStop.go, _HeldStop.entered, _HeldStop.stops = asyncio.Event(), asyncio.Event(), []


def _engine(*more: ModuleSpec) -> Engine:
    # stopped in reverse: the held module first, so the rest of the stop is still to come while it waits
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::state::StateModule"), *more, ModuleSpec(_HELD)]))


def _halt(engine: Engine, outcome: list[str]) -> None:
    """Register ``test::halt``, a built-in that stops the engine; ``outcome`` gets how its wait ended."""

    async def halt(data: Any, ctx: InvocationContext) -> Any:
        try:
            await engine.stop()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("returned")
        return {"status_code": 200, "body": "bye"}

    engine.register_function(BuiltinFunction("test::halt", halt, "stops the engine"))


def _stopped_fully(engine: Engine, port: int) -> None:
    assert _HeldStop.stops == ["ended"]  # its stop was not cancelled with the caller
    assert engine._not_stopped is None  # every module stopped, by this stop
    assert not engine.has_function("state::get")  # the state module's stop came after the held one's
    assert refused(port)  # the worker port closed


async def test_a_built_in_stopping_the_engine_under_a_call_deadline_stops_it_fully() -> None:
    engine = _engine()
    serving = asyncio.create_task(engine.serve_forever())
    await asyncio.wait_for(engine.ready.wait(), 5)
    port = engine.port
    outcome: list[str] = []
    _halt(engine, outcome)
    with pytest.raises(TimeoutError):
        await engine.invocations.call("test::halt", {}, timeout_s=0.3)  # its deadline passes during the stop
    assert _HeldStop.entered.is_set() and outcome == ["cancelled"]
    _HeldStop.go.set()
    # before: not returned, the stop cancelled in the held module's stop ('cancelled'), state and worker not stopped
    await asyncio.wait_for(serving, 5)
    _stopped_fully(engine, port)


async def test_a_rest_route_to_a_built_in_stopping_the_engine_stops_it_fully() -> None:
    engine = _engine(ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0}))
    serving = asyncio.create_task(engine.serve_forever())
    await asyncio.wait_for(engine.ready.wait(), 5)
    port = engine.port
    api = engine.module("http_api")
    assert api is not None
    outcome: list[str] = []
    _halt(engine, outcome)
    worker = await RawWorker.connect(engine.url)
    await add_route(worker, "test::halt", "halt", "POST")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as client:  # type: ignore[attr-defined]
        posting = asyncio.create_task(client.post("/halt"))
        await asyncio.wait_for(_HeldStop.entered.wait(), 5)
        _HeldStop.go.set()  # then the REST API module stops, cancelling the route's call and with it the caller
        await asyncio.wait({posting}, timeout=10)
    # before: False; the stop cancelled inside the REST API module's stop, state and worker never stopped
    await asyncio.wait_for(serving, 5)
    assert outcome == ["cancelled"]
    _stopped_fully(engine, port)


async def test_a_stop_whose_caller_is_cancelled_goes_on_and_a_later_stop_waits_for_it() -> None:
    engine = _engine()
    await engine.start()
    port = engine.port
    stop = asyncio.create_task(engine.stop())
    await asyncio.wait_for(_HeldStop.entered.wait(), 5)
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stop, 1)  # the caller's wait ends at once
    later = asyncio.create_task(engine.stop())
    done, _ = await asyncio.wait({later}, timeout=0.1)  # a wait for something that must NOT happen
    assert not done, "a later stop returned while the stop under way was still stopping modules"
    assert _HeldStop.stops == []  # before: ['cancelled']
    _HeldStop.go.set()
    await asyncio.wait_for(later, 10)
    _stopped_fully(engine, port)
    await asyncio.wait_for(engine.start(), 10)  # and it starts again
    await asyncio.wait_for(engine.stop(), 10)


async def test_a_call_to_a_stopped_modules_function_during_the_stop_names_the_stop() -> None:
    # the held module stops after the state module (reverse order): the state module is stopped, the engine not yet
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec(_HELD), ModuleSpec("modules::state::StateModule")]))
    await engine.start()
    worker = await RawWorker.connect(engine.url)
    assert "error" not in await worker.call("state::get", {"scope": "s", "key": "k"})
    stopping = asyncio.create_task(engine.stop())
    await asyncio.wait_for(_HeldStop.entered.wait(), 5)
    gone = "the engine is stopping: state::get is gone with its module (state)"
    # before: {'code': 'function_not_found', 'message': 'Function state::get not found'}
    assert (await worker.call("state::get", {"scope": "s", "key": "k"}))["error"] == {
        "code": "engine_stopping", "message": gone}
    with pytest.raises(EngineError, match="is gone with its module") as raised:
        await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 1})
    assert raised.value.code == "engine_stopping"
    assert not engine.has_function("state::get")  # a module asking (the queue's job waits for its function)
    listed = await worker.call("engine::functions::list", {})
    assert "state::get" not in {info["function_id"] for info in listed["result"]["functions"]}
    assert (await worker.call("nobody::f", {}))["error"]["code"] == "function_not_found"  # never there: as before
    _HeldStop.go.set()
    await asyncio.wait_for(stopping, 10)
    assert "state::get" not in engine.registry.functions  # gone for good at the end of the stop
    with pytest.raises(EngineError, match="Function state::get not found"):
        await engine.invoke("state::get", {"scope": "s", "key": "k"})
    await asyncio.wait_for(engine.start(), 10)  # the next run's state module serves it again
    try:
        assert await engine.invoke("state::get", {"scope": "s", "key": "k"}) is None
    finally:
        await asyncio.wait_for(engine.stop(), 10)
