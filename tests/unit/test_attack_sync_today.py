"""Attack round on today's sync-call path (LoopBridge.park, spawn's _tracked): what the 6e61c31 loop did must still
hold. A policy's own loop keeps its settings; the asyncio internals park() reads are checked at import, and a missing
one means the plain hop; a task that ends within create_task (an eager task factory) is not kept for good."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from iii import loop_bridge
from iii.loop_bridge import LoopBridge


async def _true() -> bool:
    return True


def _park_from_a_thread(bridge: LoopBridge) -> bool:
    """Whether a thread other than the main one parks ``bridge``'s loop (and lets it go again)."""
    parked: list[bool] = []

    def park() -> None:
        parked.append(bridge.park())
        if parked[0]:
            bridge.unpark()

    worker = threading.Thread(target=park)
    worker.start()
    worker.join(5)
    return parked == [True]


def _handler(_loop: asyncio.AbstractEventLoop, _context: dict[str, Any]) -> None:
    """An exception handler of the user's."""


class _ConfiguringPolicy(asyncio.DefaultEventLoopPolicy):
    """A user's policy: the standard loop, with an exception handler and debug mode set on every loop it makes."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.set_exception_handler(_handler)
        loop.set_debug(True)
        loop.slow_callback_duration = 1.5
        return loop


def test_a_policys_standard_loop_keeps_what_the_policy_set_on_it() -> None:
    # fe02924 swapped any exact SelectorEventLoop for a fresh one on the parking selector: a policy's exception
    # handler, debug mode and slow-callback threshold were silently dropped (on 6e61c31 the SDK's loop was the
    # policy's, as made).
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_ConfiguringPolicy())
    try:
        bridge = LoopBridge()
    finally:
        asyncio.set_event_loop_policy(before)
    try:
        assert bridge.loop.get_exception_handler() is _handler
        assert bridge.loop.get_debug()
        assert bridge.loop.slow_callback_duration == 1.5
        assert bridge.run(_true()) is True
        assert not bridge.park()  # a loop of the user's: the hop, as before
    finally:
        bridge.stop()


def test_the_default_policys_loop_still_parks() -> None:
    bridge = LoopBridge()
    try:
        assert bridge.run(_true()) is True
        assert _park_from_a_thread(bridge)
    finally:
        bridge.stop()


def test_the_asyncio_internals_park_reads_are_checked_at_import() -> None:
    assert loop_bridge.PARK_MISSING == ()


def test_a_missing_asyncio_internal_means_the_plain_hop_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # park() read loop._ready unchecked: an asyncio without it made every sync trigger raise AttributeError.
    monkeypatch.setattr(loop_bridge, "PARK_MISSING", ("BaseEventLoop._ready",))
    bridge = LoopBridge()
    try:
        assert bridge.run(_true()) is True
        assert not bridge.park()
    finally:
        bridge.stop()


def _eager(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    """Like Python 3.12's eager_task_factory for a coroutine that never suspends: it runs inside create_task, which
    returns it finished."""
    try:
        coro.send(None)
    except StopIteration as stop:
        future = loop.create_future()
        future.set_result(stop.value)
        return future
    raise AssertionError("the test coroutine suspended")


def test_a_task_that_ends_inside_create_task_is_not_tracked_for_good() -> None:
    # _tracked forgot the coroutine before spawn recorded its task: one entry left per such task (on 6e61c31 the
    # done callback removed it). An answer written without waiting ends an invocation with no suspension at all.
    bridge = LoopBridge()
    bridge.loop.set_task_factory(_eager)  # type: ignore[arg-type]
    ran: list[int] = []

    async def at_once() -> None:
        ran.append(1)

    async def spawn_some() -> int:
        for _ in range(5):
            bridge.spawn(at_once())
        return len(bridge._tasks)

    try:
        assert bridge.run(spawn_some()) == 0
        assert ran == [1] * 5
    finally:
        bridge.stop()

def test_the_main_thread_never_parks() -> None:
    # Ctrl-C's KeyboardInterrupt (or a SIGTERM handler's SystemExit) lands at any call of the main thread: inside
    # the parked section it left the loop parked for good, or half a frame on the socket (6e61c31: never).
    bridge = LoopBridge()
    try:
        assert bridge.run(_true()) is True
        assert not bridge.park()
        assert _park_from_a_thread(bridge)
    finally:
        bridge.stop()


def test_a_signal_handlers_exception_in_a_sync_call_leaves_the_loop_running(monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = LoopBridge()
    real = bridge.loop.get_debug
    armed = [False]

    def interrupted() -> bool:  # Ctrl-C's handler running at this call, right after park() took the lock
        if armed[0] and threading.current_thread() is threading.main_thread():
            armed[0] = False
            raise KeyboardInterrupt
        return real()

    try:
        assert bridge.run(_true()) is True
        monkeypatch.setattr(bridge.loop, "get_debug", interrupted)
        armed[0] = True  # (only for the park() call: asyncio reads get_debug too)
        try:
            if bridge.park():
                bridge.unpark()
        except KeyboardInterrupt:
            pass
        armed[0] = False
        answer = asyncio.run_coroutine_threadsafe(_true(), bridge.loop)
        assert answer.result(5) is True  # before: concurrent.futures.TimeoutError, the loop parked for good
    finally:
        bridge.stop()
