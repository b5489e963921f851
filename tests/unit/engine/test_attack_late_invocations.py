"""Attacks on the engine call path of commits be69ade..7b23e56: built-in call tasks that leave
``Invocations._tasks`` themselves, and ``close()`` emptying that set."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from iii.wire import dumps
from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import BuiltinFunction
from iii_engine.registry import FunctionEntry

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as started:
        yield started


async def test_close_leaves_no_builtin_task_running_untracked(engine: Engine) -> None:
    """A built-in call that starts while close() waits for the cancelled ones must not be dropped from the task
    set still running (it would be neither cancelled nor awaited, and only weakly referenced by the loop)."""
    first_started = asyncio.Event()
    first_cancelled = asyncio.Event()
    let_first_end = asyncio.Event()
    second_started = asyncio.Event()
    never = asyncio.Event()

    async def slow_cleanup(data: Any, ctx: Any) -> Any:
        first_started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            first_cancelled.set()
            await let_first_end.wait()  # a built-in with cleanup to finish: close() waits for it
            raise

    async def waits(data: Any, ctx: Any) -> Any:
        second_started.set()
        await never.wait()

    engine.registry.add_function(FunctionEntry("t::slowclean", builtin=BuiltinFunction("t::slowclean", slow_cleanup)))
    engine.registry.add_function(FunctionEntry("t::waits", builtin=BuiltinFunction("t::waits", waits)))
    ws = await websockets.connect(engine.url, compression=None)
    try:
        await ws.recv()
        await ws.send(dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                             "function_id": "t::slowclean", "data": None}))
        await asyncio.wait_for(first_started.wait(), 5)
        closing = asyncio.create_task(engine.invocations.close())
        await asyncio.wait_for(first_cancelled.wait(), 5)
        # a frame that arrives while close() waits: a new built-in task
        await ws.send(dumps({"type": "invokefunction", "invocation_id": str(uuid.uuid4()),
                             "function_id": "t::waits", "data": None}))
        await asyncio.wait_for(second_started.wait(), 5)
        let_first_end.set()
        await asyncio.wait_for(closing, 5)
        running = [task for task in engine.invocations._tasks if not task.done()]
        all_running = [t for t in asyncio.all_tasks()
                       if not t.done() and t.get_coro().__qualname__ == "Invocations._run_builtin_for"]  # type: ignore[union-attr]
        # either close() also stopped the late task, or it is still tracked: never running and untracked
        assert set(all_running) <= set(running)
    finally:
        never.set()
        await ws.close()
