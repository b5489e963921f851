"""A ``stream:leave`` fan-out takes room as the other fan-outs do (only for the calls it can make) and runs each
handler in a task of its own.

Before, ``JoinLeaveTriggers.run_detached`` took a ``max_fired_calls`` slot for every matching leave trigger and one
task called them in turn: another worker's 40 catch-all leave triggers of ``ghost::nobody`` or of
``engine::functions::list`` (``max_fired_calls`` 40) made every leave ask for 41 slots and be refused (123 refused),
a worker's own leave handler hearing 0 of 3 leaves; and one leave handler that never answered held up every handler
after it (another worker's heard its leave only once the hung worker left: not within 70 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import counters_left
from tests.integration.engine_streams.helpers import SocketClient
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls_per_worker share")]

STREAM = ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0})
LIMIT = 40
SHARE = LIMIT // 4  # the default share: a quarter of max_fired_calls
LEAVES = 3
GHOST = "ghost::nobody"
BUILTIN = "engine::functions::list"


def stream_engine() -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[STREAM], max_fired_calls=LIMIT,
                                      fire_wait_timeout_ms=1_000))


async def join_and_leave(engine: Engine, sub_id: str) -> None:
    client = await SocketClient.connect(engine)
    await client.join(sub_id, "rooms", "g")
    assert (await client.recv())["event"]["type"] == "sync"
    await client.close()


@pytest.mark.parametrize("target", [GHOST, BUILTIN])
async def test_catch_all_leave_triggers_of_unserved_or_builtin_functions_leave_other_leave_handlers(
        target: str) -> None:
    heard: list[Any] = []

    async def left(data: Any) -> None:
        heard.append(data)

    async with stream_engine() as engine, ModuleWorker(engine.url) as victim, ModuleWorker(engine.url) as attacker:
        await victim.function("rooms::left", left)
        await victim.trigger("left", "stream:leave", "rooms::left", {"stream_name": "rooms"})
        for i in range(LIMIT):
            await attacker.send({"type": "registertrigger", "id": f"a{i}", "trigger_type": "stream:leave",
                                 "function_id": target, "config": {}})
        await attacker.sync()
        for n in range(LEAVES):
            await join_and_leave(engine, f"s{n}")
        await until(lambda: len(heard) == LEAVES)  # before: 0 of 3, every leave refused
        await until(lambda: not counters_left(engine))
        stats = engine.fired_calls.stats()
        assert stats["refused"] == 0
        if target == GHOST:
            assert engine.invocations.missing_fired == LEAVES * LIMIT
            assert stats["skipped_callee_share"] == 0
        else:
            assert engine.invocations.missing_fired == 0
            assert stats["skipped_callee_share"] == LEAVES * (LIMIT - SHARE)
        assert stats["busiest_callee"] == 0


async def test_a_hung_leave_handler_holds_up_no_other_workers_leave_handler() -> None:
    heard: list[Any] = []
    hung: list[Any] = []
    let_go = asyncio.Event()

    async def left(data: Any) -> None:
        heard.append(data)

    async def hang(data: Any) -> None:
        hung.append(data)
        await let_go.wait()

    async with stream_engine() as engine, ModuleWorker(engine.url) as victim, ModuleWorker(engine.url) as attacker:
        await attacker.function("evil::hang", hang)
        await attacker.trigger("h", "stream:leave", "evil::hang", {})  # registered first: called first before
        await victim.function("rooms::left", left)
        await victim.trigger("left", "stream:leave", "rooms::left", {"stream_name": "rooms"})
        for n in range(LEAVES):
            await join_and_leave(engine, f"s{n}")
        await until(lambda: len(hung) == LEAVES)
        await until(lambda: len(heard) == LEAVES, within=5)  # before: none while the hung handler was held
        assert engine.fired_calls.stats()["in_flight"] == LEAVES  # the hung calls hold their own slots only
        let_go.set()
        await until(lambda: not counters_left(engine))
        assert engine.fired_calls.stats()["refused"] == 0


async def test_a_leave_handler_past_its_workers_share_is_left_out_before_the_take() -> None:
    """A worker's leave handlers past its share take no slot and are counted as not made (the others are called)."""
    heard: list[str] = []

    async with stream_engine() as engine, ModuleWorker(engine.url) as worker:
        for n in range(SHARE + 2):
            async def left(data: Any, name: str = f"h{n}") -> None:
                heard.append(name)

            await worker.function(f"rooms::left{n}", left)
            await worker.trigger(f"left{n}", "stream:leave", f"rooms::left{n}", {"stream_name": "rooms"})
        await join_and_leave(engine, "s")
        await until(lambda: len(heard) >= SHARE)
        await until(lambda: not counters_left(engine))
        stats = engine.fired_calls.stats()
        assert (stats["skipped_callee_share"], stats["refused"], stats["peak"]) == (2, 0, SHARE)
        assert len(heard) == SHARE


async def test_a_join_trigger_of_a_function_nobody_serves_refuses_every_join() -> None:
    """Fail-closed by design: a join handler that cannot decide refuses the join (``join_failed``), whoever
    registered it; gate who may register triggers where that matters."""
    async with stream_engine() as engine, ModuleWorker(engine.url) as other:
        await other.send({"type": "registertrigger", "id": "g", "trigger_type": "stream:join",
                          "function_id": GHOST, "config": {}})
        await other.sync()
        for n in range(LEAVES):
            client = await SocketClient.connect(engine)
            await client.join(f"s{n}", "rooms", "g")
            event = (await client.recv())["event"]
            assert (event["type"], event["code"]) == ("error", "join_failed"), event
            assert GHOST in event["message"]
            await client.close()
