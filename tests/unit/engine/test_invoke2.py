"""The engine's per-call path without per-call extras: no ``asyncio.timeout`` when a call has no deadline, built-ins
run in one coroutine, the routed path's room check, canonical ids accepted at once; every guarantee kept."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from iii.protocol.worker_session import WorkerSession
from iii.wire import dumps, loads
from iii_engine import Engine, EngineConfig
from iii_engine import invocations as invocations_module
from iii_engine.modules.base import BuiltinFunction, EngineError
from iii_engine.registry import FunctionEntry
from iii_engine.workers import Outbox

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as started:
        yield started


@pytest.fixture
def no_timeout_objects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float | None]]:
    """Records every ``asyncio.timeout`` the invocation module enters (still a working one)."""
    entered: list[float | None] = []
    real = asyncio.timeout

    def counting(delay: float | None) -> Any:
        if sys._getframe(1).f_globals.get("__name__") == invocations_module.__name__:  # not websockets' own
            entered.append(delay)
        return real(delay)

    monkeypatch.setattr(invocations_module.asyncio, "timeout", counting)
    yield entered


async def _worker(engine: Engine, function_id: str) -> Any:
    ws = await websockets.connect(engine.url, compression=None)
    await ws.recv()  # workerregistered
    await ws.send(dumps({"type": "registerfunction", "id": function_id}))
    await ws.send('{"type":"ping"}')
    while loads(await ws.recv()).get("type") != "pong":
        pass
    return ws


async def test_a_call_without_deadline_enters_no_timeout(engine: Engine,
                                                         no_timeout_objects: list[float | None]) -> None:
    async def echo(data: Any, ctx: Any) -> Any:
        return data

    engine.registry.add_function(FunctionEntry("t::echo", builtin=BuiltinFunction("t::echo", echo)))
    assert await engine.invocations.call("t::echo", {"a": 1}) == {"a": 1}
    worker = await _worker(engine, "w::f")
    try:
        call = asyncio.create_task(engine.invocations.call("w::f", {"b": 2}))
        request = loads(await worker.recv())
        await worker.send(dumps({"type": "invocationresult", "invocation_id": request["invocation_id"],
                                 "function_id": "w::f", "result": "done"}))
        assert await call == "done"
    finally:
        await worker.close()
    assert no_timeout_objects == []


async def test_a_call_with_a_deadline_still_times_out(engine: Engine,
                                                      no_timeout_objects: list[float | None]) -> None:
    never = asyncio.Event()

    async def stuck(data: Any, ctx: Any) -> Any:
        await never.wait()

    engine.registry.add_function(FunctionEntry("t::stuck", builtin=BuiltinFunction("t::stuck", stuck)))
    with pytest.raises(TimeoutError):
        await engine.invocations.call("t::stuck", None, timeout_s=0.05)
    worker = await _worker(engine, "w::silent")
    try:
        with pytest.raises(EngineError) as caught:
            await engine.invocations.call("w::silent", None, timeout_s=0.05)
        assert caught.value.code == "invocation_timeout"
        assert engine.invocations.pending == {}  # the timed-out call left the pending table
    finally:
        await worker.close()
    assert no_timeout_objects == [0.05, 0.05]


async def test_a_routed_call_without_deadline_is_still_bounded_by_the_engine_timeout() -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], invocation_timeout_ms=100)
    async with Engine(config=config) as engine:
        worker = await _worker(engine, "w::silent")
        try:
            with pytest.raises(EngineError) as caught:
                await engine.invocations.call("w::silent", None)
            assert caught.value.code == "invocation_timeout"
        finally:
            await worker.close()


async def test_builtins_called_over_the_socket_answer_results_errors_and_failures(engine: Engine) -> None:
    async def ok(data: Any, ctx: Any) -> Any:
        return {"seen": data, "caller": ctx.caller_worker_id is not None, "id": ctx.invocation_id}

    async def refused(data: Any, ctx: Any) -> Any:
        raise EngineError("nope", "refused")

    async def broken(data: Any, ctx: Any) -> Any:
        raise RuntimeError("kaput")

    for name, handler in (("t::ok", ok), ("t::refused", refused), ("t::broken", broken)):
        engine.registry.add_function(FunctionEntry(name, builtin=BuiltinFunction(name, handler)))
    ws = await websockets.connect(engine.url, compression=None)
    try:
        await ws.recv()
        answers: dict[str, Any] = {}
        for name in ("t::ok", "t::refused", "t::broken"):
            invocation_id = str(uuid.uuid4())
            await ws.send(dumps({"type": "invokefunction", "invocation_id": invocation_id, "function_id": name,
                                 "data": 5}))
            answer = loads(await ws.recv())
            assert answer["invocation_id"] == invocation_id
            answers[name] = answer
    finally:
        await ws.close()
    assert answers["t::ok"]["result"] == {"seen": 5, "caller": True, "id": answers["t::ok"]["invocation_id"]}
    assert answers["t::refused"]["error"] == {"code": "nope", "message": "refused"}
    failure = answers["t::broken"]["error"]
    assert failure["code"] == "internal_error" and "kaput" in failure["message"]
    assert "RuntimeError: kaput" in failure["stacktrace"]


@pytest.mark.parametrize(("sent", "kept"), [
    ("8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11", "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"),
    ("8D1C3B4E-0F6A-4C39-9C55-2F1F3F0F5A11", "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"),
    ("{8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11}", "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"),
    ("8d1c3b4e0f6a4c399c552f1f3f0f5a11", "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"),
])
def test_invocation_ids_are_read_in_canonical_form(sent: str, kept: str) -> None:
    event = WorkerSession("w").receive(dumps({"type": "invokefunction", "invocation_id": sent, "function_id": "f",
                                              "data": None}))
    assert event is not None and type(event).__name__ == "Invoke"
    assert event.message["invocation_id"] == kept  # type: ignore[union-attr]


@pytest.mark.parametrize("sent", ["8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a1", "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11\n",
                                  "g" * 8 + "-0f6a-4c39-9c55-2f1f3f0f5a11", ""])
def test_bad_invocation_ids_are_refused(sent: str) -> None:
    event = WorkerSession("w").receive(dumps({"type": "invokefunction", "invocation_id": sent, "function_id": "f",
                                              "data": None}))
    assert type(event).__name__ == "Rejected"


async def test_send_without_flush_leaves_the_frame_to_the_turns_write() -> None:
    flushes: list[int] = []
    frames: list[str] = []

    async def send(text: str) -> None:
        frames.append(text)

    box = Outbox(send, flush=lambda: flushes.append(1))
    assert await box.send("a", flush=False) and flushes == []
    assert await box.send("b") and flushes == [1]  # the default still flushes at once
    assert await box.send("c", 1, flush=False) and frames == ["a", "b", "c"] and box.queued_bytes == 0
    await box.close()


async def test_a_builtins_reply_is_written_by_the_calls_own_task(engine: Engine) -> None:
    writers: list[str] = []

    async def whoami(data: Any, ctx: Any) -> Any:
        return "me"

    engine.registry.add_function(FunctionEntry("t::me", builtin=BuiltinFunction("t::me", whoami)))
    ws = await websockets.connect(engine.url, compression=None)
    try:
        await ws.recv()
        worker = next(iter(engine.workers.values()))
        real_send, real_write_now = worker.outbox._send, worker.outbox._write_now
        assert real_write_now is not None

        def note_writer() -> None:
            task = asyncio.current_task()
            writers.append(task.get_coro().__qualname__ if task is not None else "")  # type: ignore[union-attr]

        async def recording(text: str) -> None:
            note_writer()
            await real_send(text)

        def recording_now(text: str, hold: bool) -> int:  # the write without a coroutine, when the socket takes it
            note_writer()
            return real_write_now(text, hold)

        worker.outbox._send = recording  # type: ignore[method-assign]
        worker.outbox._write_now = recording_now
        invocation_id = str(uuid.uuid4())
        await ws.send(dumps({"type": "invokefunction", "invocation_id": invocation_id, "function_id": "t::me",
                             "data": None}))
        assert loads(await ws.recv()) == {"type": "invocationresult", "invocation_id": invocation_id,
                                          "function_id": "t::me", "result": "me"}
    finally:
        await ws.close()
    assert writers == ["Invocations._run_builtin_for"]  # not the outbox's sender task (Outbox._drain)


async def test_builtin_call_tasks_leave_the_task_set_and_close_cancels_the_rest(engine: Engine) -> None:
    hold = asyncio.Event()
    started = asyncio.Event()

    async def quick(data: Any, ctx: Any) -> Any:
        return data

    async def slow(data: Any, ctx: Any) -> Any:
        started.set()
        await hold.wait()

    engine.registry.add_function(FunctionEntry("t::quick", builtin=BuiltinFunction("t::quick", quick)))
    engine.registry.add_function(FunctionEntry("t::slow", builtin=BuiltinFunction("t::slow", slow)))
    ws = await websockets.connect(engine.url, compression=None)
    try:
        await ws.recv()
        for n in range(50):
            await ws.send(dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                                 "function_id": "t::quick", "data": n}))
        for _ in range(50):
            await ws.recv()
        # the last task's own finally may run just after its reply is written: wait for the tasks left, then none
        await asyncio.wait_for(asyncio.gather(*list(engine.invocations._tasks)), 5)
        assert not engine.invocations._tasks
        await ws.send(dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": "t::slow",
                             "data": None}))
        await asyncio.wait_for(started.wait(), 5)
        assert len(engine.invocations._tasks) == 1
        await engine.invocations.close()  # engine shutdown: the waiting built-in is cancelled, the set emptied
        assert not engine.invocations._tasks
    finally:
        await ws.close()
