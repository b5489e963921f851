"""Invocation ids without uuid4 and the task-free call API (Invocations.start / EngineServices.start_invocation)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig
from iii_engine.invocations import InvocationIds, is_uuid, new_invocation_id
from iii_engine.modules.base import BuiltinFunction, EngineError


def test_ids_are_version_4_uuids_and_unique() -> None:
    ids = InvocationIds()
    seen = {ids() for _ in range(20_000)}
    assert len(seen) == 20_000
    for value in list(seen)[:200]:
        parsed = uuid.UUID(value)
        assert is_uuid(value) and parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value


def test_ids_are_drawn_again_when_the_drawn_ones_are_used_up() -> None:
    ids = InvocationIds()
    values = [ids() for _ in range(3 * InvocationIds._BATCH + 1)]
    assert len(set(values)) == len(values) and all(is_uuid(v) for v in values)


def test_a_forked_child_draws_its_own_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_invocation_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert is_uuid(child) and child[:24] != new_invocation_id()[:24]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as started:
        yield started


async def _worker(engine: Engine, function_id: str) -> Any:
    ws = await websockets.connect(engine.url, compression=None)
    await ws.recv()  # workerregistered
    await ws.send(dumps({"type": "registerfunction", "id": function_id}))
    await ws.send(dumps({"type": "ping"}))
    while loads(await ws.recv()).get("type") != "pong":
        pass
    return ws


async def test_start_routes_without_a_task_and_resolves_the_future(engine: Engine) -> None:
    ws = await _worker(engine, "w.echo")
    try:
        tasks_before = len(asyncio.all_tasks())
        started = await engine.start_invocation("w.echo", {"a": 1})
        assert len(asyncio.all_tasks()) == tasks_before  # nothing spawned for the call
        frame = loads(await ws.recv())
        assert frame["type"] == "invokefunction" and is_uuid(frame["invocation_id"])
        assert frame["invocation_id"] in engine.invocations.pending
        await ws.send(dumps({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                             "function_id": "w.echo", "result": {"ok": 1}}))
        assert await asyncio.wait_for(started.future, 5) == ({"ok": 1}, None)
        assert not engine.invocations.pending
    finally:
        await ws.close()


async def test_abandon_leaves_the_pending_table_and_drops_the_late_result(engine: Engine) -> None:
    ws = await _worker(engine, "w.slow")
    try:
        started = await engine.start_invocation("w.slow", None)
        frame = loads(await ws.recv())
        started.abandon()
        assert not engine.invocations.pending and started.future.result() == (None, None)
        started.abandon()  # a no-op the second time
        await ws.send(dumps({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                             "function_id": "w.slow", "result": 1}))
        await ws.send(dumps({"type": "ping"}))
        while loads(await ws.recv()).get("type") != "pong":
            pass
        assert not engine.invocations.pending
    finally:
        await ws.close()


async def test_start_of_a_builtin_and_of_an_unknown_function(engine: Engine) -> None:
    async def double(data: Any, ctx: Any) -> Any:
        return data * 2

    engine.register_function(BuiltinFunction("b.double", double))
    started = await engine.start_invocation("b.double", 21)
    assert await asyncio.wait_for(started.future, 5) == (42, None)
    with pytest.raises(EngineError) as caught:
        await engine.start_invocation("no.such", None)
    assert caught.value.code == "function_not_found"


async def test_start_cancelled_while_waiting_for_room_leaves_no_pending_call(engine: Engine) -> None:
    ws = await _worker(engine, "w.full")
    try:
        worker = next(iter(engine.workers.values()))
        room = asyncio.Event()  # never set: the worker's queue stays full
        waiting = asyncio.Event()

        async def wait_for_room(size: int = 0, call: object = None) -> None:
            waiting.set()
            await room.wait()

        worker.outbox.wait_for_room = wait_for_room  # type: ignore[method-assign]
        worker.outbox.must_wait = lambda size=0: True  # type: ignore[method-assign]
        call = asyncio.ensure_future(engine.start_invocation("w.full", None))
        await asyncio.wait_for(waiting.wait(), 5)
        assert engine.invocations.pending
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not engine.invocations.pending and not worker.in_flight
    finally:
        await ws.close()
