"""LoopBridge.spawn: a finished task leaves the tracked tasks in its own last step (no done callback scheduled for
another loop iteration per invocation served), and shutdown still ends and forgets every task."""

from __future__ import annotations

import asyncio

from iii.loop_bridge import LoopBridge


async def _quick() -> int:
    return 1


def test_a_finished_task_is_forgotten_without_another_loop_turn() -> None:
    bridge = LoopBridge()
    try:

        async def scenario() -> int:
            bridge.spawn(_quick())
            # One yield: the spawned task's only step runs before we resume. A done callback would run after us.
            await asyncio.sleep(0)
            return len(bridge._tasks)

        assert bridge.run(scenario()) == 0
    finally:
        bridge.stop()


def test_cancel_tasks_ends_running_and_unstarted_tasks_without_warnings() -> None:
    bridge = LoopBridge()
    try:
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        unstarted = _quick()

        async def scenario() -> tuple[int, int]:
            bridge.spawn(forever())
            await started.wait()
            bridge.spawn(unstarted)  # cancelled before its first step
            before = len(bridge._tasks)
            await bridge.cancel_tasks()
            return before, len(bridge._tasks)

        assert bridge.run(scenario()) == (2, 0)
        assert unstarted.cr_frame is None  # closed: no "coroutine was never awaited" warning when collected
    finally:
        bridge.stop()


def test_a_failing_task_is_forgotten_too() -> None:
    bridge = LoopBridge()
    try:

        async def boom() -> None:
            raise ValueError("handler bug")

        async def scenario() -> int:
            bridge.spawn(boom())
            await asyncio.sleep(0)
            return len(bridge._tasks)

        assert bridge.run(scenario()) == 0
    finally:
        bridge.stop()
