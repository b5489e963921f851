"""LoopBridge.run when the loop stops before it ran the caller's coroutine (a concurrent shutdown)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from iii import loop_bridge
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


@pytest.mark.parametrize("hop", ["run", "run_async"])
def test_a_run_on_a_closed_loop_is_loop_stopped_and_closes_the_coroutine(hop: str) -> None:
    # run() said asyncio's "RuntimeError: Event loop is closed" where run_async said LoopStoppedError (a
    # ShuttingDownError): a sync call racing the very end of a stop got the one a shutdown handler does not catch.
    bridge = LoopBridge()
    bridge.stop()
    coro = _never_reached()
    with pytest.raises(LoopStoppedError):
        if hop == "run":
            bridge.run(coro)
        else:
            asyncio.run(bridge.run_async(coro))
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED



@pytest.mark.parametrize("hop", ["run", "run_async"])
def test_a_run_handed_over_while_the_stop_sweeps_the_loop_ends_in_loop_stopped(hop: str) -> None:
    # The stop's sweep read once, before its first wait, which tasks had callers waiting from elsewhere, and left
    # those alone: a run handed over during the sweep (a second shutdown() racing the first thread's stop) was
    # cancelled under its caller, who got CancelledError. Now every task left is ended, and such callers are told
    # the loop stopped.
    bridge = LoopBridge()
    started, swept = threading.Event(), threading.Event()

    async def slow_to_end() -> None:  # an untracked task whose clean-up keeps the sweep going a while
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swept.set()
            await asyncio.sleep(0.3)

    bridge.submit(slow_to_end())
    assert started.wait(5)
    stopper = threading.Thread(target=bridge.stop)
    stopper.start()
    assert swept.wait(5)
    errors: list[BaseException] = []
    handed = time.monotonic()
    try:
        if hop == "run":
            bridge.run(asyncio.sleep(5))
        else:
            asyncio.run(bridge.run_async(asyncio.sleep(5)))
    except BaseException as exc:  # the expected LoopStoppedError, or the fault
        errors.append(exc)
    stopper.join(10)
    assert [type(error) for error in errors] == [LoopStoppedError]
    # cancelled once the sweep saw it, not waited for uncancelled to the end of the sweep's 3 s
    assert time.monotonic() - handed < 2.0
    assert not bridge.alive
    assert not asyncio.all_tasks(bridge.loop)  # nothing left pending on the closed loop


async def test_a_caller_cancelled_while_the_bridge_stops_gets_its_own_cancel() -> None:
    bridge = LoopBridge()
    entered = threading.Event()

    async def held() -> None:
        entered.set()
        await asyncio.sleep(30)

    waiter = asyncio.ensure_future(bridge.run_async(held()))
    assert await asyncio.to_thread(entered.wait, 5)
    bridge._stopping = True  # (as a stop under way has it)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await bridge.stop_async()


def test_a_run_handed_over_in_the_sweeps_last_wait_is_ended_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past CANCEL_WAIT_S the sweep cancels what is left once more and waits a last time: a run handed over during
    # that wait was neither cancelled nor waited for, and the loop closed with its task pending.
    monkeypatch.setattr(loop_bridge, "CANCEL_WAIT_S", 0.2)
    bridge = LoopBridge()
    started, last_wait = threading.Event(), threading.Event()

    async def refuses_its_cancels() -> None:  # a clean-up that outlasts the sweep (bounded: 1 s)
        started.set()
        cancels = 0
        end = None
        while end is None or time.monotonic() < end:
            try:
                await asyncio.sleep(0.01 if end is not None else 30)
            except asyncio.CancelledError:
                cancels += 1
                end = end or time.monotonic() + 1.0
                if cancels == 2:  # the sweep's second cancel: its last wait
                    last_wait.set()

    bridge.submit(refuses_its_cancels())
    assert started.wait(5)
    stopper = threading.Thread(target=bridge.stop)
    stopper.start()
    assert last_wait.wait(5)
    with pytest.raises(LoopStoppedError):
        bridge.run(asyncio.sleep(5))
    stopper.join(10)
    assert not bridge.alive
    assert [task for task in asyncio.all_tasks(bridge.loop) if "sleep" in repr(task.get_coro())] == []
