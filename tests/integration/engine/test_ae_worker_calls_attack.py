"""Attack A-E on max_calls_per_worker (iii_engine.limits.WorkerCalls): calls ending every way, from real
WebSocket clients, thousands at once; the count of every worker must come back to 0 (never below, never above
the bound), every answered call must get exactly one answer, and a worker at the bound must not hold up others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction, EngineError, InvocationContext
from iii_engine.workers import WorkerConnection
from tests.polling import until

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: our max_calls_per_worker bound")]



async def _inner_cancelled(data: Any, ctx: InvocationContext) -> Any:
    """A built-in whose own await ends in CancelledError although its task was not cancelled (an inner future
    someone else cancelled)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    return await future


async def test_a_built_in_ending_in_an_inner_cancellation_answers_internal_error(engine: Engine) -> None:
    # Before: the CancelledError went through the built-in's task: the caller never got an answer (nothing said
    # so) and the call's id stayed in the worker's in-flight set for good.
    engine.register_function(BuiltinFunction("test::inner_cancelled", _inner_cancelled))
    caller = await RawWorker.connect(engine.url)
    answer = await caller.call("test::inner_cancelled", {})
    assert answer["error"]["code"] == "internal_error", answer
    assert "CancelledError" in answer["error"]["message"]
    connection = engine.workers[caller.worker_id]
    assert (connection.calls, connection.in_flight) == (0, set())
    # an engine-internal call of it fails the same way (and is not taken for its caller's own cancellation)
    with pytest.raises(Exception, match="internal_error"):
        await engine.invoke("test::inner_cancelled", {})


async def test_an_enqueue_ending_in_an_inner_cancellation_answers_enqueue_error(engine: Engine) -> None:
    class Queues:
        async def enqueue(self, queue_name: str, function_id: str, data: Any) -> str:
            return str(await _inner_cancelled(data, InvocationContext(None, None, None, None)))

    engine.serve_named_queues(Queues())
    caller = await RawWorker.connect(engine.url)
    answer = await caller.call("any::fn", {}, action={"type": "enqueue", "queue": "jobs"})
    assert answer["error"]["code"] == "enqueue_error", answer
    await until(lambda: engine.workers[caller.worker_id].calls == 0)


LIMIT = 300


def _engine(limit: int = LIMIT, **config: Any) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], max_calls_per_worker=limit, **config))


async def _connect(url: str) -> tuple[ClientConnection, str]:
    ws = await websockets.connect(url, compression=None, max_size=None, max_queue=None)  # reads all it is sent
    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert first["type"] == "workerregistered", first
    return ws, str(first["worker_id"])


class Watch:
    """Checks every worker's counts on every turn of the event loop while it runs: never below 0, never above the
    bound, each kind apart (a count that went wrong and came right again would pass the final check)."""

    def __init__(self, engine: Engine, limit: int) -> None:
        self.engine = engine
        self.limit = limit
        self.wrong: list[int] = []
        self.turns = 0
        self._handle = asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self.turns += 1
        self.wrong.extend(w.calls for w in self.engine.workers.values()
                          if not (0 <= w.builtin_calls <= self.limit and 0 <= w.calls - w.builtin_calls <= self.limit))
        self._handle = asyncio.get_running_loop().call_soon(self._check)

    def stop(self) -> None:
        self._handle.cancel()


class Callee:
    """A worker serving ``callee::f``; ``data["mode"]`` says how it ends each call: ``ok``, ``err`` (an error
    answer), ``dup`` (answered twice), ``wrong`` (another worker answers first; E6 ignores it), ``invalid``
    (undecodable answers first) or ``never`` (left to invocation_timeout_ms)."""

    def __init__(self, ws: ClientConnection, impostor: ClientConnection) -> None:
        self.ws = ws
        self.impostor = impostor
        self.received = 0
        self.void_received = 0
        self.some_received = asyncio.Event()

    async def serve(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._serve()

    async def _serve(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame.get("type") != "invokefunction":
                continue
            self.received += 1
            self.some_received.set()
            data = frame["data"]
            self.void_received += bool(data.get("void"))
            mode = data["mode"]
            invocation_id = frame["invocation_id"]
            answer: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id,
                                      "function_id": frame["function_id"]}
            if mode == "never":
                continue
            if mode == "wrong":
                await self.impostor.send(json.dumps({**answer, "result": "impostor"}))
            if mode == "invalid":
                await self.ws.send(json.dumps({"type": "invocationresult", "invocation_id": 12, "result": 1}))
                await self.ws.send('{"type":"invocationresult","invocation_id":"' + invocation_id + '",')
            if mode == "err":
                answer["error"] = {"code": "callee_error", "message": "no"}
            else:
                answer["result"] = mode
            await self.ws.send(json.dumps(answer))
            if mode == "dup":
                await self.ws.send(json.dumps(answer))


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


class Queues:
    """Enqueue targets: queue ``nope`` does not exist."""

    def __init__(self) -> None:
        self.void_accepted = 0

    async def enqueue(self, queue_name: str, function_id: str, data: Any) -> str:
        await asyncio.sleep(0)  # a turn, as a store's write takes
        if queue_name == "nope":
            raise EngineError("enqueue_error", f"Queue {queue_name} not found")
        self.void_accepted += bool(data.get("void"))
        return "receipt"


def _storm(rng: random.Random, frames: int) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """A caller's frames: every way a call ends, answered and void, mixed; the answers each id must get, and how
    many void frames (calls of ``callee::f`` and enqueues) it holds."""
    out: list[dict[str, Any]] = []
    answers: dict[str, int] = {}
    void = 0
    answered_ids: list[str] = []
    for _ in range(frames):
        kind = rng.choice(["ok", "err", "dup", "wrong", "invalid", "never", "void", "builtin", "boom", "cancelled",
                           "enqueue", "enqueue_unknown", "enqueue_void", "reuse"])
        invocation_id = str(uuid.uuid4())
        frame: dict[str, Any] = {"type": "invokefunction", "invocation_id": invocation_id, "data": {}}
        if kind in ("ok", "err", "dup", "wrong", "invalid", "never"):
            frame.update(function_id="callee::f", data={"mode": kind})
        elif kind == "void":
            del frame["invocation_id"]
            frame.update(function_id="callee::f", action={"type": "void"},
                         data={"mode": rng.choice(["ok", "never", "dup"]), "void": True})
        elif kind in ("builtin", "boom", "cancelled"):
            frame["function_id"] = {"builtin": "test::echo", "boom": "test::boom",
                                    "cancelled": "test::inner_cancelled"}[kind]
        elif kind in ("enqueue", "enqueue_unknown", "enqueue_void"):
            frame.update(function_id="test::echo",
                         action={"type": "enqueue", "queue": "nope" if kind == "enqueue_unknown" else "jobs"})
            if kind == "enqueue_void":
                del frame["invocation_id"]
                frame["data"] = {"void": True}
        elif answered_ids:  # reuse: an id this caller used before (refused while that call is not over)
            frame.update(function_id="test::echo", invocation_id=rng.choice(answered_ids[-20:]))
        else:
            continue
        if "invocation_id" in frame:
            answers[frame["invocation_id"]] = answers.get(frame["invocation_id"], 0) + 1
            answered_ids.append(frame["invocation_id"])
        else:
            void += 1
        out.append(frame)
    return out, answers, void


async def _echo(data: Any, ctx: InvocationContext) -> Any:
    await asyncio.sleep(0)
    return "echo"


async def _boom(data: Any, ctx: InvocationContext) -> Any:
    raise RuntimeError("boom")


@pytest.fixture
async def storm_engine() -> AsyncIterator[tuple[Engine, Callee, Queues]]:
    engine = _engine(invocation_timeout_ms=500)
    await engine.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        for function_id, handler in (("test::echo", _echo), ("test::boom", _boom),
                                     ("test::inner_cancelled", _inner_cancelled)):
            engine.register_function(BuiltinFunction(function_id, handler))
        queues = Queues()
        engine.serve_named_queues(queues)
        ws, _ = await _connect(engine.url)
        impostor, _ = await _connect(engine.url)
        await ws.send(json.dumps({"type": "registerfunction", "id": "callee::f"}))
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"
        callee = Callee(ws, impostor)
        tasks = [asyncio.ensure_future(callee.serve()), asyncio.ensure_future(_drain(impostor))]
        yield engine, callee, queues
    finally:
        for task in tasks:
            task.cancel()
        await engine.stop()


async def _run_caller(ws: ClientConnection, frames: list[dict[str, Any]], answers: dict[str, int],
                      got: dict[str, list[Any]]) -> None:
    """Send every frame at once, then read until every answered frame has its answer."""
    for frame in frames:
        await ws.send(json.dumps(frame))
    wanted = sum(answers.values())
    received = 0
    while received < wanted:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("type") == "invocationresult":
            received += 1
            got.setdefault(frame["invocation_id"], []).append(frame.get("error", {}).get("code"))


async def test_thousands_of_calls_ending_every_way_bring_every_count_back_to_zero(
        storm_engine: tuple[Engine, Callee, Queues]) -> None:
    engine, callee, queues = storm_engine
    watch = Watch(engine, LIMIT)
    rng = random.Random(20261130)
    callers = [await _connect(engine.url) for _ in range(6)]
    connections: list[WorkerConnection] = [engine.workers[worker_id] for _, worker_id in callers]
    plans = [_storm(rng, 1500) for _ in callers]
    got: list[dict[str, list[Any]]] = [{} for _ in callers]
    await asyncio.gather(*(_run_caller(ws, frames, answers, into)
                           for (ws, _), (frames, answers, _), into in zip(callers, plans, got, strict=True)))
    # every answered frame got exactly one answer
    for (_, answers, _), answered in zip(plans, got, strict=True):
        assert {i: len(codes) for i, codes in answered.items()} == answers
    codes = [code for answered in got for each in answered.values() for code in each]
    assert codes.count("too_many_calls") == engine.worker_calls.refused > 0  # the storm did reach the bound
    # (the callee's own answers may all come after the timeout on a loaded machine: not required here)
    for code in ("invocation_timeout", "invocation_id_in_use", "internal_error", "enqueue_error"):
        assert code in codes
    # one more sends its storm and leaves at once (caller disconnect mid-call)
    leaver, leaver_id = await _connect(engine.url)
    leaver_connection = engine.workers[leaver_id]
    leaver_frames, _, leaver_void = _storm(rng, 1500)
    for frame in leaver_frames:
        await leaver.send(json.dumps(frame))
    await leaver.close()
    # every count back to 0 once the timeouts ran out, the leaver's too
    await until(lambda: leaver_id not in engine.workers and not engine.invocations.pending
                and not engine.invocations._tasks)
    assert [c.calls for c in connections] == [0] * len(connections)
    assert leaver_connection.calls == 0
    # every void frame was run, or refused and counted (none lost unsaid)
    void_sent = sum(void for _, _, void in plans) + leaver_void
    assert engine.worker_calls.refused_void > 0
    await until(lambda: callee.void_received + queues.void_accepted + engine.worker_calls.refused_void == void_sent)
    watch.stop()
    assert watch.wrong == [] and watch.turns > 100


async def test_an_engine_stopped_in_the_middle_of_a_storm_keeps_no_count_slot_or_task(
        storm_engine: tuple[Engine, Callee, Queues]) -> None:
    engine, callee, _ = storm_engine
    rng = random.Random(7)
    callers = [await _connect(engine.url) for _ in range(3)]
    connections = [engine.workers[worker_id] for _, worker_id in callers]
    for ws, _ in callers:
        for frame in _storm(rng, 1000)[0]:
            await ws.send(json.dumps(frame))
    await until(lambda: callee.received >= 200 and sum(c.calls for c in connections) > 0)
    await engine.stop()
    assert [c.calls for c in connections] == [0, 0, 0]
    assert not engine.invocations.pending and not engine.invocations._tasks
    assert engine.fired_calls.stats()["in_flight"] == 0
    # the same engine started again serves calls, counted from 0
    await engine.start()
    worker = await RawWorker.connect(engine.url)
    assert await worker.result_of("test::echo", {}) == "echo"
    await worker.sync()
    assert engine.workers[worker.worker_id].calls == 0
    await worker.close()


async def test_a_worker_flooding_at_the_bound_does_not_hold_up_another_workers_calls() -> None:
    """A worker holding max_calls_per_worker calls floods more (answered and void, all refused) while another
    worker calls a built-in again and again: the other's calls all succeed, and go on while the flood is being
    answered (counted: calls completed between the flood's first and last refusal), not after it."""
    limit, flood = 50, 4000
    async with _engine(limit=limit) as engine:
        engine.register_function(BuiltinFunction("test::echo", _echo))
        callee = await RawWorker.connect(engine.url)
        await callee.register("callee::never")
        await callee.sync()
        hostile = await RawWorker.connect(engine.url)
        for _ in range(limit):
            await hostile.send({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                                "function_id": "callee::never", "data": {}})
        for _ in range(limit):
            await callee.expect("invokefunction")
        good = await RawWorker.connect(engine.url)
        frames = []
        for n in range(flood):
            frame: dict[str, Any] = {"type": "invokefunction", "function_id": "callee::never", "data": {}}
            if n % 2:
                frame["action"] = {"type": "void"}
            else:
                frame["invocation_id"] = str(uuid.uuid4())
            frames.append(json.dumps(frame))
        answered = flood // 2
        refused = 0
        first_refusal = asyncio.Event()

        async def send_flood() -> None:
            for text in frames:
                await hostile.ws.send(text)

        async def read_refusals() -> None:
            nonlocal refused
            while refused < answered:
                answer = json.loads(await asyncio.wait_for(hostile.ws.recv(), 10))
                assert answer["error"]["code"] == "too_many_calls", answer
                refused += 1
                first_refusal.set()

        sender, reader = asyncio.ensure_future(send_flood()), asyncio.ensure_future(read_refusals())
        await asyncio.wait_for(first_refusal.wait(), 10)
        during = 0
        while refused < answered:
            assert await good.result_of("test::echo", {}) == "echo"
            during += refused < answered
        await sender
        await reader
        await hostile.sync()
        assert during >= 10, during
        assert (engine.worker_calls.refused, engine.worker_calls.refused_void) == (answered, flood - answered)
        assert engine.workers[hostile.worker_id].calls == limit
        assert engine.workers[good.worker_id].calls == 0
        await callee.nothing_for(0.05)  # none of the flood reached the callee
