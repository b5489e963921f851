"""Void calls of a function no worker serves (docs: README "trigger with a void action").

After an engine restart a caller's backlog of void calls may arrive before its callee's worker has registered again;
production drops them silently (an attack: 15 of 15 lost). Ours holds such a call up to ``void_grace_ms`` for a
worker to register the function, routes it then, in order, and past the grace drops it, counted and logged at most
once per interval (one WARNING line per call once flooded the log: 10,000 lines for a backlog of 10,000).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, held_voids
from iii_engine.modules.base import BuiltinFunction
from iii_engine.registry import FunctionEntry

from .raw import RawWorker
from .raw import disconnect as _gone

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our hold of void calls")]


def _void(function_id: str, i: int = 0) -> dict[str, object]:
    return {"type": "invokefunction", "function_id": function_id, "data": {"i": i}, "action": {"type": "void"}}


async def _send_voids(caller: RawWorker, n: int, function_id: str = "late::fn") -> None:
    """``n`` void calls of ``function_id`` (data ``{"i": 0}`` ...), all handled by the engine on return."""
    for i in range(n):
        await caller.send(_void(function_id, i))
    await caller.sync()


async def _engine(**settings: int) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], **settings))  # type: ignore[arg-type]


@pytest.fixture
async def dropping() -> AsyncIterator[Engine]:
    """An engine that drops such calls at once (``void_grace_ms: 0``), as production does."""
    async with await _engine(void_grace_ms=0) as running:
        yield running


async def test_a_void_waits_for_its_function_and_runs_once_registered(engine: Engine) -> None:
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await _send_voids(caller, 5)
        assert engine.invocations.unknown_void_calls == 0
        await callee.register("late::fn")
        got = [(await callee.expect("invokefunction", function_id="late::fn"))["data"] for _ in range(5)]
        assert got == [{"i": i, "_caller_worker_id": caller.worker_id} for i in range(5)]
        # nothing is held any more: a call now goes straight through, and nothing was counted as dropped
        await caller.send(_void("late::fn", 5))
        assert (await callee.expect("invokefunction"))["data"]["i"] == 5
        assert engine.invocations.unknown_void_calls == 0
        # the six routed calls count until answered (this callee never answers); the holds were given back
        assert engine.workers[caller.worker_id].calls == 6
    finally:
        await caller.close()
        await callee.close()


async def test_past_the_grace_it_is_dropped_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async with await _engine(void_grace_ms=200) as engine:
        caller = await RawWorker.connect(engine.url)
        callee = await RawWorker.connect(engine.url)
        try:
            held = engine.invocations.held_voids
            expired = asyncio.Event()
            expire = held._expire

            def expire_and_tell() -> None:  # (set before the first hold, which schedules it)
                expire()
                if not len(held):
                    expired.set()

            held._expire = expire_and_tell  # type: ignore[method-assign]
            with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
                await _send_voids(caller, 100, "nobody::here")
                assert engine.invocations.unknown_void_calls == 0
                await asyncio.wait_for(expired.wait(), 5)
            assert engine.invocations.unknown_void_calls == 100
            assert engine.workers[caller.worker_id].calls == 0
            assert engine.workers[caller.worker_id].call_bytes == 0
            lines = [r.getMessage() for r in caplog.records if "void call(s) of unknown functions" in r.getMessage()]
            assert len(lines) == 1, lines
            assert lines[0].startswith("1 void call(s) of unknown functions dropped")
            assert "'nobody::here'" in lines[0] and caller.worker_id in lines[0]
            await callee.register("nobody::here")  # too late: nothing arrives
            await callee.nothing_for(0.2)
        finally:
            await caller.close()
            await callee.close()


async def test_with_no_grace_a_burst_is_dropped_at_once_with_one_line(dropping: Engine,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caller = await RawWorker.connect(dropping.url)
    try:
        with caplog.at_level(logging.WARNING, logger="iii_engine.invocations"):
            await _send_voids(caller, 1000, "nobody::here")
        lines = [r.getMessage() for r in caplog.records if "void call(s) of unknown functions" in r.getMessage()]
        assert dropping.invocations.unknown_void_calls == 1000
        assert len(lines) == 1, lines
    finally:
        await caller.close()


async def test_a_void_to_a_function_whose_worker_is_gone_waits_too(engine: Engine) -> None:
    """The registration still there, its worker no longer connected (its cleanup under way): held like an unknown
    function's (before: dropped without a word), and routed when a worker registers the function again."""
    engine.registry.add_function(FunctionEntry("ghost::f", owner="a-worker-that-left"))
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await caller.send(_void("ghost::f", 1))
        await caller.sync()
        await callee.register("ghost::f")
        assert (await callee.expect("invokefunction", function_id="ghost::f"))["data"]["i"] == 1
        assert engine.invocations.unknown_void_calls == 0
    finally:
        await caller.close()
        await callee.close()


async def test_held_calls_are_bounded_apart_from_calls_in_flight(engine: Engine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Held calls have their own bound per worker (past it a void is dropped, counted, as production drops it) and
    take nothing of the caller's ``max_calls_per_worker``: a worker calling a function that never comes keeps
    calling the others."""
    monkeypatch.setattr(held_voids, "MAX_HELD_PER_WORKER", 3)
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await _send_voids(caller, 5)
        assert engine.invocations.unknown_void_calls == 2
        assert len(engine.invocations.held_voids) == 3
        assert engine.workers[caller.worker_id].calls == 0
        await callee.register("late::fn")
        got = [(await callee.expect("invokefunction"))["data"]["i"] for _ in range(3)]
        assert got == [0, 1, 2]
        await callee.nothing_for(0.2)
        assert len(engine.invocations.held_voids) == 0 and engine.invocations.held_voids.bytes == 0
    finally:
        await caller.close()
        await callee.close()


async def test_a_void_sent_as_the_function_registers_goes_behind_the_held_ones(engine: Engine) -> None:
    """Its attack: a void arriving in the loop turn of the registration was routed before the whole backlog
    (100 of 100 trials: ``[5, 0, 1, 2, 3, 4]``)."""
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await _send_voids(caller, 5)
        # the registration and the next void leave together, so the engine reads them in one turn
        await asyncio.gather(callee.register("late::fn"), caller.send(_void("late::fn", 5)))
        got = [(await callee.expect("invokefunction"))["data"]["i"] for _ in range(6)]
        assert got == [0, 1, 2, 3, 4, 5]
    finally:
        await caller.close()
        await callee.close()


async def test_a_release_keeps_the_callers_bound() -> None:
    """Held calls routed one by one take the caller's count as they go: with ``max_calls_per_worker`` 3 and a callee
    that never answers, 3 arrive and the rest are refused, never 6 (its attack: 6 of 6 arrived)."""
    async with await _engine(max_calls_per_worker=3) as engine:
        caller = await RawWorker.connect(engine.url)
        callee = await RawWorker.connect(engine.url)
        try:
            await _send_voids(caller, 3)
            await asyncio.gather(callee.register("late::fn"), *(caller.send(_void("late::fn", i)) for i in (3, 4, 5)))
            got = [(await callee.expect("invokefunction"))["data"]["i"] for _ in range(3)]
            assert got == [0, 1, 2]
            await callee.nothing_for(0.2)
            assert engine.workers[caller.worker_id].calls == 3
            assert engine.worker_calls.refused_void == 3
        finally:
            await caller.close()
            await callee.close()


async def test_routed_and_dropped_calls_leave_nothing_held(engine: Engine) -> None:
    """Its attack: routed held calls stayed in the engine until their grace ended (300 MiB of payloads for 1,200
    calls of 256 KiB while every counter said 0)."""
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await _send_voids(caller, 50)
        assert engine.invocations.held_voids.bytes > 0
        await callee.register("late::fn")
        for _ in range(50):
            await callee.expect("invokefunction")
        assert len(engine.invocations.held_voids) == 0 and engine.invocations.held_voids.bytes == 0
    finally:
        await caller.close()
        await callee.close()


async def test_a_caller_that_left_has_its_held_calls_dropped(engine: Engine) -> None:
    """A caller's disconnect stops its calls (as it stops those routed): its held ones are dropped, counted, at once."""
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await caller.send(_void("late::fn", 1))
        await caller.sync()
        await _gone(engine, caller)
        assert engine.invocations.unknown_void_calls == 1
        assert len(engine.invocations.held_voids) == 0
        await callee.register("late::fn")
        await callee.nothing_for(0.2)
    finally:
        await callee.close()


async def test_a_stop_drops_held_calls() -> None:
    engine = await _engine()
    async with engine:
        caller = await RawWorker.connect(engine.url)
        await caller.send(_void("late::fn", 1))
        await caller.sync()
    assert engine.invocations.unknown_void_calls == 1
    assert len(engine.invocations.held_voids) == 0


async def test_past_the_held_bound_during_a_release_a_caller_waits_its_turn(engine: Engine,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller past its held bound while its held calls are routed waits for them (back-pressure) instead of
    overtaking them (its attack: 202 of 202 delivered, out of order: ``[0..5, 165, 6, …]``)."""
    monkeypatch.setattr(held_voids, "MAX_HELD_PER_WORKER", 2)
    caller = await RawWorker.connect(engine.url)
    callee = await RawWorker.connect(engine.url)
    try:
        await _send_voids(caller, 2)
        await asyncio.gather(callee.register("late::fn"), *(caller.send(_void("late::fn", i)) for i in range(2, 12)))
        got = [(await callee.expect("invokefunction"))["data"]["i"] for _ in range(12)]
        assert got == list(range(12))
        assert engine.invocations.unknown_void_calls == 0
    finally:
        await caller.close()
        await callee.close()


async def test_a_function_the_engine_registers_later_gets_its_held_calls(engine: Engine) -> None:
    """``Engine.register_function`` on a running engine releases the calls held for that id (before: they waited
    out the grace and were dropped)."""
    ran: list[int] = []
    done = asyncio.Event()

    async def late(data: Any, ctx: Any) -> None:
        ran.append(data["i"])
        if len(ran) == 3:
            done.set()

    caller = await RawWorker.connect(engine.url)
    try:
        await _send_voids(caller, 3, "app::late")
        engine.register_function(BuiltinFunction("app::late", late))
        await asyncio.wait_for(done.wait(), 5)
        assert sorted(ran) == [0, 1, 2]  # (built-in calls run in tasks of their own: no order among them)
        assert engine.invocations.unknown_void_calls == 0
    finally:
        await caller.close()
