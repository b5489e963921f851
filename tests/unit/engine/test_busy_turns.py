"""BusyTurns: the held calls of one key go one at a time, in dispatch order, and leave nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from iii_engine.busy_turns import BusyTurns


async def _started(coro: Coroutine[Any, Any, bool]) -> asyncio.Task[bool]:
    task = asyncio.create_task(coro)
    await asyncio.sleep(0)  # one step: it joins its line (a task's first step runs at the next loop turn)
    return task


async def test_held_calls_go_in_dispatch_order_whatever_order_they_were_refused_in() -> None:
    turns = BusyTurns()
    first, second, third = turns.ticket("k"), turns.ticket("k"), turns.ticket("k")
    assert not await first.hold()  # the first refused is asked at once
    late_third = await _started(third.hold())
    late_second = await _started(second.hold())  # refused after the third, dispatched before it
    first.release()
    assert await late_second and not late_third.done()
    second.release()
    assert await late_third
    third.release()
    assert turns.held_keys() == 0


async def test_an_earlier_call_refused_late_never_goes_ahead_of_the_one_being_asked() -> None:
    turns = BusyTurns()
    earlier, later = turns.ticket("k"), turns.ticket("k")
    await later.hold()
    behind = await _started(earlier.hold())
    assert not behind.done()  # the worker may be running ``later`` right now
    later.release()
    assert await behind
    earlier.release()


async def test_a_cancelled_call_lets_the_next_go_and_leaves_no_entry() -> None:
    turns = BusyTurns()
    first, second, third = turns.ticket("k"), turns.ticket("k"), turns.ticket("k")
    await first.hold()
    waiting_second = await _started(second.hold())
    waiting_third = await _started(third.hold())
    waiting_second.cancel()
    second.release()  # as the caller's ``finally`` does
    first.release()
    assert await waiting_third
    third.release()
    third.release()  # twice is harmless
    assert turns.held_keys() == 0


async def test_keys_do_not_wait_for_each_other() -> None:
    turns = BusyTurns()
    a, b = turns.ticket("a"), turns.ticket("b")
    await a.hold()
    assert not b.behind_held()
    assert not await b.hold()
    a.release()
    b.release()
    assert turns.held_keys() == 0
