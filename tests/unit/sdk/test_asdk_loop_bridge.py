"""LoopBridge.run when the loop stops before it ran the caller's coroutine (a concurrent shutdown)."""

from __future__ import annotations

import inspect
import threading
import time

import pytest

from iii.loop_bridge import LoopBridge, LoopStoppedError


async def _never_reached() -> int:
    return 1


def test_a_coroutine_the_stopped_loop_never_ran_is_closed() -> None:
    # Left unclosed, it was reported "coroutine ... was never awaited" whenever it was collected (shutdown() from
    # several threads: the first stopped the loop before the others' shutdown_async ran).
    bridge = LoopBridge()
    loop = bridge.loop
    coro = _never_reached()
    errors: list[BaseException] = []

    def stop_once_the_run_is_queued() -> None:
        # (a callback: the loop's other callbacks wait; it stops the loop before the run's hand-over gets a turn)
        deadline = time.monotonic() + 5
        while not loop._ready and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.001)
        loop.stop()

    def run() -> None:
        try:
            bridge.run(coro)
        except BaseException as exc:  # the expected LoopStoppedError, or the fault
            errors.append(exc)

    loop.call_soon_threadsafe(stop_once_the_run_is_queued)
    caller = threading.Thread(target=run)
    caller.start()
    caller.join(10)
    assert len(errors) == 1 and isinstance(errors[0], LoopStoppedError)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    bridge.stop()


def test_run_on_a_closed_loop_closes_the_coroutine() -> None:
    bridge = LoopBridge()
    bridge.stop()
    coro = _never_reached()
    with pytest.raises(RuntimeError, match="closed"):
        bridge.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
