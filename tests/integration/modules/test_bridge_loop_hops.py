"""Engines bridged in a loop (attack on the bridge client): A forwards ``loop::x`` to B and B forwards it back to A.
One call to it made a new call at every hop, each with the forward's whole timeout and nothing ending the inner ones:
the caller got "timed out" at 5 s and the loop went on for ever after it left (0.7 core and about 1 MB a second per
engine, no log line). Each bridged call now carries how many bridges it passed (``iii-bridge-hops`` in its baggage)
and the 16th answers ``bridge_error`` "bridge loop", so the call ends at once and both engines are idle after it."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import BuiltinFunction, EngineError, InvocationContext
from iii_engine.modules.bridge.client import BridgeClientModule
from tests.integration.engine.test_startup_trust import free_port
from tests.polling import until

pytestmark = pytest.mark.our_engine("bridges two in-process engines of ours")

CLIENT = "modules::bridge_client::BridgeClientModule"
# (literals, not the module's names: the test also runs against the code before them)
HOPS_KEY = "iii-bridge-hops"
MAX_BRIDGE_HOPS = 16


def _bridged(port: int, other: int, forward: list[dict[str, Any]]) -> EngineConfig:
    return EngineConfig(host="127.0.0.1", port=port, modules=[ModuleSpec(CLIENT, {
        "url": f"ws://127.0.0.1:{other}", "forward": forward})])


def _client(engine: Engine) -> BridgeClientModule:
    module = engine.module("bridge_client")
    assert isinstance(module, BridgeClientModule)
    return module


def _idle(engine: Engine) -> bool:
    return _client(engine).link._pending_calls == 0 and len(engine.invocations._tasks) == 0


async def test_a_call_to_engines_bridged_in_a_loop_ends_with_the_loop_error(
        caplog: pytest.LogCaptureFixture) -> None:
    port_a, port_b = free_port(), free_port()
    forward = [{"local_function": "loop::x", "remote_function": "loop::x", "timeout_ms": 5000}]
    caplog.set_level(logging.WARNING, logger="iii_engine.modules.bridge.client")
    async with Engine(config=_bridged(port_a, port_b, forward)) as a, \
            Engine(config=_bridged(port_b, port_a, forward)) as b:
        await until(lambda: _client(a).link.connected and _client(b).link.connected, within=15)
        began = time.monotonic()
        with pytest.raises(EngineError) as failed:
            await a.invoke("loop::x", {"p": 1}, timeout_s=20)
        took = time.monotonic() - began
        message = failed.value.message
        assert failed.value.code == "bridge_error", failed.value
        # before: "invocation timed out after 5000 ms" at 5 s, the loop going on after it
        assert f"bridge loop: the call of loop::x passed {MAX_BRIDGE_HOPS} bridges" in message, message[:500]
        assert took < 4, took
        await until(lambda: _idle(a) and _idle(b), within=5)
        # a second call ends the same way; the loop was logged once, not at each call
        with pytest.raises(EngineError, match="bridge loop"):
            await a.invoke("loop::x", {"p": 2}, timeout_s=20)
        await until(lambda: _idle(a) and _idle(b), within=5)
    loops = [r for r in caplog.records if "bridge loop" in r.getMessage()]
    assert len(loops) == 1, [r.getMessage() for r in loops]


async def test_other_baggage_members_travel_through_a_forward() -> None:
    seen: list[str | None] = []

    async def echo(data: Any, ctx: InvocationContext) -> Any:
        seen.append(ctx.baggage)
        return data

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as back:
        back.register_function(BuiltinFunction("remote::echo", echo, "echo"))
        front = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(CLIENT, {
            "url": back.url, "forward": [{"local_function": "echo", "remote_function": "remote::echo"}]})])
        async with Engine(config=front) as engine:
            handler = engine.registry.functions["echo"]
            assert handler.builtin is not None
            ctx = InvocationContext(None, None, None, f"tenant=t1;p=1, {HOPS_KEY}=3")
            assert (await handler.builtin.handler({"v": 1}, ctx))["v"] == 1
    assert seen == [f"tenant=t1;p=1,{HOPS_KEY}=4"]
