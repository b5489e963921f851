"""A worker's frames are handled in its socket's read callback (issue 10): calls and results without waking the
worker's reading task; a frame whose handling has to wait (a call waiting for room in its callee's queue) is left to
that task, and every frame after it waits its turn; a failure in one frame's handling leaves the connection up."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest

from iii.protocol.worker_session import WorkerSession
from iii_engine import Engine, EngineConfig
from iii_engine.invocations import Invocations
from tests.polling import until

from .raw import RawWorker, disconnect


async def _answer(callee: RawWorker, received: list[int] | None = None) -> None:
    """Answer every call ``callee`` receives with its data until its socket closes (``received``: each call's
    ``n``, in arrival order)."""
    async for raw in callee.ws:
        msg = json.loads(raw)
        if msg.get("type") == "invokefunction":
            if received is not None:
                received.append(msg["data"]["n"])
            await callee.send({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                               "function_id": msg["function_id"], "result": "ok"})


async def _pair(engine: Engine, function_id: str) -> tuple[RawWorker, RawWorker]:
    """A callee serving ``function_id`` and a caller, both known to the engine."""
    callee, caller = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    await callee.register(function_id)
    await callee.sync()
    await caller.sync()
    return callee, caller


async def test_calls_and_results_are_handled_without_waking_the_reading_task(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    callee, caller = await _pair(engine, "w::echo")
    handled_in: list[tuple[str, asyncio.Task[Any] | None]] = []
    real_start, real_result = Invocations.start_invoke, Invocations.handle_result

    def start_invoke(self: Invocations, *args: Any, **kwargs: Any) -> Any:
        handled_in.append(("invoke", asyncio.current_task()))
        return real_start(self, *args, **kwargs)

    def handle_result(self: Invocations, *args: Any, **kwargs: Any) -> None:
        handled_in.append(("result", asyncio.current_task()))
        real_result(self, *args, **kwargs)

    monkeypatch.setattr(Invocations, "start_invoke", start_invoke)
    monkeypatch.setattr(Invocations, "handle_result", handle_result)
    answering = asyncio.create_task(_answer(callee))
    try:
        for n in range(20):
            frame = await caller.call("w::echo", {"n": n})
            assert frame["result"] == "ok", frame
    finally:
        answering.cancel()
    assert len(handled_in) == 40, handled_in
    # before: each was handled by the worker's reading task, woken for it (a loop turn and a callback per frame)
    assert [(kind, task) for kind, task in handled_in if task is not None] == []
    await disconnect(engine, caller)
    await disconnect(engine, callee)


async def test_a_frame_failing_in_the_callback_leaves_the_connection_serving(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    callee, caller = await _pair(engine, "w::echo")
    failed_in: list[asyncio.Task[Any] | None] = []
    real_start = Invocations.start_invoke

    def start_invoke(self: Invocations, caller_: Any, msg: dict[str, Any], size: int = 0) -> Any:
        if msg["function_id"] == "w::bad":
            failed_in.append(asyncio.current_task())
            raise RuntimeError("a bug in handling w::bad")
        return real_start(self, caller_, msg, size)

    monkeypatch.setattr(Invocations, "start_invoke", start_invoke)
    answering = asyncio.create_task(_answer(callee))
    try:
        with caplog.at_level(logging.ERROR, logger="iii_engine.engine"):
            await caller.send({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                               "function_id": "w::bad", "data": None})
            # the same connection goes on: the next call is routed and answered
            frame = await caller.call("w::echo", {"n": 1})
        assert frame["result"] == "ok", frame
    finally:
        answering.cancel()
    assert failed_in == [None], failed_in  # it failed in the read callback, not in a task
    assert any("failed to handle a frame" in record.getMessage() and record.exc_info for record in caplog.records), \
        caplog.records
    await disconnect(engine, caller)
    await disconnect(engine, callee)


async def test_frames_after_a_call_waiting_for_room_wait_their_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    # a small callee queue (max_outbox_bytes): the calls wait for room soon
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], max_outbox_bytes=256 * 1024)) as engine:
        await _calls_wait_their_turn(engine, monkeypatch)


async def _calls_wait_their_turn(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    callee, caller = await _pair(engine, "w::slow")
    routes: list[tuple[asyncio.Task[Any] | None, asyncio.Task[Any] | None]] = []  # (started in, ended in)
    routed: list[int] = []
    real_route = Invocations._route

    async def route(self: Invocations, pending: Any, data: Any, *args: Any) -> None:
        started_in = asyncio.current_task()
        await real_route(self, pending, data, *args)
        routes.append((started_in, asyncio.current_task()))
        routed.append(data["n"])

    monkeypatch.setattr(Invocations, "_route", route)
    pongs_after: list[int] = []
    real_pong = WorkerSession.pong

    def pong() -> str:  # only the caller pings from here on
        pongs_after.append(len(routed))
        return real_pong()

    monkeypatch.setattr(WorkerSession, "pong", staticmethod(pong))
    callee.ws.transport.pause_reading()  # the callee's queue fills: the caller's calls wait for room
    calls = 120
    blob = "x" * 64 * 1024

    async def flood() -> None:
        for n in range(calls):
            await caller.send({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                               "function_id": "w::slow", "data": {"n": n, "blob": blob}})
        await caller.send({"type": "ping"})

    flooding = asyncio.create_task(flood())
    received: list[int] = []
    answering: asyncio.Task[None] | None = None
    try:
        # a call is waiting for room in the callee's queue (in the table, not written yet)
        await until(lambda: len(engine.invocations.pending) > len(routed), within=20)
        assert pongs_after == []  # the ping behind the waiting calls was not answered before them
        callee.ws.transport.resume_reading()
        answering = asyncio.create_task(_answer(callee, received))
        await asyncio.wait_for(flooding, 20)
        await caller.expect("pong", wait=20)
        await until(lambda: len(received) == calls, within=20)
    finally:
        flooding.cancel()
        if answering is not None:
            answering.cancel()
    assert routed == list(range(calls))
    assert received == list(range(calls))
    assert pongs_after == [calls], pongs_after  # answered only once every call before it was routed
    # the path under test was taken: a call started in the read callback and finished by the reading task
    assert any(start is None and end is not None for start, end in routes), routes[:5]
    await disconnect(engine, caller)
    await disconnect(engine, callee)


async def test_a_registration_before_a_call_in_one_burst_is_handled_first(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.sync()
    for n in range(10):
        function_id = f"w::own{n}"
        invocation_id = str(uuid.uuid4())
        # both frames most likely reach the engine in one read: the call behind the registration must find the
        # function registered (else: function_not_found)
        frames = [json.dumps({"type": "registerfunction", "id": function_id}),
                  json.dumps({"type": "invokefunction", "invocation_id": invocation_id, "function_id": function_id,
                              "data": {"n": n}})]
        sending: list[Coroutine[Any, Any, None]] = [worker.ws.send(frame) for frame in frames]
        await asyncio.gather(*sending)
        request = await worker.expect("invokefunction", function_id=function_id)
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": function_id, "result": n})
        frame = await worker.expect("invocationresult", invocation_id=invocation_id)
        assert frame.get("result") == n, frame
    await disconnect(engine, worker)
