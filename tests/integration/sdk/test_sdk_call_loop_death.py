"""A call waiting while the client's own event loop thread dies fails at once with a clear error, never hangs.

``trigger_async`` awaited on a foreign loop, and sync ``trigger``, are answered by the client's private loop
thread; if that thread ends mid-call (stopped, or killed by an exception escaping its loop), nothing could ever
settle the call. They must raise :class:`~iii.loop_bridge.LoopStoppedError` promptly instead.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iii.errors import ShuttingDownError
from iii.iii import III
from iii.loop_bridge import LoopStoppedError

from .conftest import MakeWorker, RealEngineThread, workers_of

PROMPT = 5.0  # seconds: far below the call's 60 s timeout, so only the loop's death can end the wait


@pytest.fixture
def make_worker() -> Iterator[MakeWorker]:
    with RealEngineThread() as real:
        yield from workers_of(real.url)


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    loop.stop()


def _kill(loop: asyncio.AbstractEventLoop) -> None:
    raise SystemExit("killed")  # a BaseException escapes run_forever: the loop thread dies


def _bury(client: III) -> None:
    """Close the dead client's socket on its (stopped) loop from here, so the engine need not time it out."""
    bridge = client._bridge
    bridge.thread.join(5)
    if not bridge.loop.is_closed():
        bridge.loop.run_until_complete(asyncio.wait_for(client.shutdown_async(), 5))


def _blocking_callee(make_worker: MakeWorker) -> tuple[III, threading.Event, threading.Event]:
    """A worker whose ``slow::wait`` handler signals ``entered`` and holds the call until ``release``."""
    callee = make_worker("callee")
    entered, release = threading.Event(), threading.Event()

    def wait(data: Any) -> Any:
        entered.set()
        release.wait(20)
        return data

    callee.register_function("slow::wait", wait)
    callee.list_functions()
    return callee, entered, release


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the killed loop thread
@pytest.mark.parametrize("end_loop", [_stop, _kill], ids=["stopped", "killed"])
def test_trigger_async_on_a_foreign_loop_fails_when_the_sdk_loop_dies(
    make_worker: MakeWorker, end_loop: Callable[[asyncio.AbstractEventLoop], None]
) -> None:
    _, entered, release = _blocking_callee(make_worker)
    caller = make_worker("caller")
    try:

        async def scenario() -> tuple[BaseException | None, float]:
            call = asyncio.ensure_future(
                caller.trigger_async({"function_id": "slow::wait", "payload": {}, "timeout_ms": 60_000}))
            assert await asyncio.to_thread(entered.wait, 10), "the call never reached the callee"
            bridge = caller._bridge
            bridge.loop.call_soon_threadsafe(end_loop, bridge.loop)
            start = time.monotonic()
            try:
                await asyncio.wait_for(call, PROMPT)
            except (LoopStoppedError, TimeoutError) as exc:
                return exc, time.monotonic() - start
            return None, time.monotonic() - start

        error, waited = asyncio.run(scenario())
        assert isinstance(error, LoopStoppedError), f"expected LoopStoppedError, got {error!r}"
        assert isinstance(error, ShuttingDownError)  # handled wherever a shutdown is
        assert "event loop thread" in str(error) and "stopped" in str(error)
        assert str(pickle.loads(pickle.dumps(error))) == str(error)
        assert waited < PROMPT
    finally:
        release.set()
        _bury(caller)


def test_sync_trigger_fails_at_once_when_the_sdk_loop_dies(make_worker: MakeWorker) -> None:
    _, entered, release = _blocking_callee(make_worker)
    caller = make_worker("caller")
    outcome: list[BaseException | None] = []
    try:

        def call() -> None:
            try:
                caller.trigger({"function_id": "slow::wait", "payload": {}, "timeout_ms": 60_000})
                outcome.append(None)
            except BaseException as exc:  # recorded for the assertion
                outcome.append(exc)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        assert entered.wait(10), "the call never reached the callee"
        start = time.monotonic()
        caller._bridge.loop.call_soon_threadsafe(_stop, caller._bridge.loop)
        thread.join(PROMPT)
        # Before, the sync wait re-checked the loop every timeout + 1 s (61 s here).
        assert not thread.is_alive(), "sync trigger still waiting after the loop thread ended"
        assert time.monotonic() - start < PROMPT
        assert isinstance(outcome[0], LoopStoppedError)
    finally:
        release.set()
        _bury(caller)


def test_calls_after_the_loop_died_fail_at_once(make_worker: MakeWorker) -> None:
    caller = make_worker("caller")
    bridge = caller._bridge
    bridge.loop.call_soon_threadsafe(_stop, bridge.loop)
    bridge.thread.join(5)
    assert not bridge.alive

    async def late() -> Any:
        return await asyncio.wait_for(caller.trigger_async({"function_id": "x", "payload": {}}), PROMPT)

    with pytest.raises(LoopStoppedError):
        asyncio.run(late())
    with pytest.raises(LoopStoppedError):
        caller.list_functions()  # a sync hop (LoopBridge.run) held the same way
    _bury(caller)
